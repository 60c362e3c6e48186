"""The authentication flow of the product documents' `authenticate_user`: a first factor (a
password against the provider chain, or an OIDC login), an MFA challenge when the user has a
second factor, then a session; plus refresh, logout and what every request needs, turning a
bearer into a Principal (loomos.security.authn.resolver).

    authn = Authenticator(settings.security.authn, open_security_db(url), audit=AuditWriter(store))
    outcome = authn.login("alice", "...", RequestContext(source_ip=..., user_agent=...))
    if isinstance(outcome, MfaChallenge): grant = authn.verify_mfa(outcome.challenge_id, code="123456", ...)

Every success and failure is audited (loomos.security.authn.audit). The methods block on the
database (and the providers): LoomCtl calls them from worker threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from loomos.models.identity import AuthMethod
from loomos.security.authn import audit as ev
from loomos.security.authn import tables as t
from loomos.security.authn.accounts import Accounts, User
from loomos.security.authn.api_tokens import ApiTokens
from loomos.security.authn.audit import AuditWriter, RequestContext
from loomos.security.authn.errors import (
    AccountLocked,
    AuthnError,
    BadAuthnRequest,
    Forbidden,
    LoginFailed,
    NotAuthenticated,
    RateLimited,
)
from loomos.security.authn.external import (
    BadCredentials,
    ExternalUser,
    ProviderError,
    ProviderUnavailable,
    TokenInvalid,
    UnknownUser,
)
from loomos.security.authn.lockout import Lockouts, RateLimiter
from loomos.security.authn.mfa import (
    Challenge,
    Challenges,
    check_sms_config,
    new_sms_code,
    send_sms,
    sms_code_matches,
)
from loomos.security.authn.mfa_totp import Totp
from loomos.security.authn.mfa_webauthn import WebAuthn
from loomos.security.authn.passwords import MAX_PASSWORD_LENGTH, MAX_USERNAME_LENGTH, Passwords
from loomos.security.authn.principal import CredentialCache, Principal
from loomos.security.authn.roles import NoRoleStore, RoleStore, grants_from_groups
from loomos.security.authn.secrets_format import SecretHasher
from loomos.security.authn.sessions import Session, Sessions
from loomos.security.authn.settings import AuthnSettings

Clock = Callable[[], datetime]
GENERIC_FAILURE = "invalid username or password"


@dataclass(frozen=True)
class SessionGrant:
    """A new session: the token is shown once."""

    token: str
    session: Session
    user: User
    roles: dict[str, list[str]]
    refresh_token: str | None = None  # OIDC: the provider's, for POST /auth/refresh
    id_token: str | None = None


@dataclass(frozen=True)
class MfaChallenge:
    challenge_id: str
    methods: list[str]
    expires_at: datetime
    webauthn_options: dict[str, Any] | None = None


@dataclass
class Authenticator:
    settings: AuthnSettings
    engine: Engine
    audit: AuditWriter = field(default_factory=lambda: AuditWriter(None))
    role_store: RoleStore = field(default_factory=NoRoleStore)
    passwords: Passwords = field(default_factory=Passwords)
    clock: Clock = t.utcnow
    http: httpx.Client | None = None
    oidc: Any = None  # OidcProvider, made from the settings when None
    ldap: Any = None  # LdapProvider, likewise

    def __post_init__(self) -> None:
        s = self.settings
        check_sms_config(s.mfa)
        hasher = SecretHasher(s.tokens.pepper.get_secret_value() if s.tokens.pepper else None)
        self.accounts = Accounts(self.engine, self.passwords, self.clock)
        self.tokens = ApiTokens(self.engine, hasher, s.tokens, self.clock)
        self.sessions = Sessions(self.engine, hasher, s.sessions, self.clock)
        self.lockouts = Lockouts(self.engine, s.lockout, self.clock)
        self.limiter = RateLimiter(s.lockout.attempts_per_minute)
        self.totp = Totp(self.engine, s.mfa.totp_issuer, self.clock)
        self.webauthn = WebAuthn(self.engine, s.mfa, self.clock)
        self.challenges = Challenges(self.engine, hasher, s.mfa, self.clock)
        self.cache = CredentialCache(s.tokens.cache_ttl_s)
        if self.oidc is None and s.oidc.issuer_url:
            from loomos.security.authn.oidc import OidcProvider

            self.oidc = OidcProvider(s.oidc, self.http)
        if self.ldap is None and "ldap" in s.password_providers:
            from loomos.security.authn.ldap import LdapProvider

            self.ldap = LdapProvider(s.ldap)

    def close(self) -> None:
        self.audit.close()

    # --- first factor -------------------------------------------------------------------------

    def login(self, username: str, password: str, ctx: RequestContext) -> SessionGrant | MfaChallenge:
        """Check a username and password against the provider chain; a session, or the MFA
        challenge to answer first. Raises LoginFailed, AccountLocked, RateLimited."""
        if len(username) > MAX_USERNAME_LENGTH or len(password) > MAX_PASSWORD_LENGTH or not username:
            self._failed(ctx, username[:MAX_USERNAME_LENGTH], "password", "oversized or empty credentials")
            raise BadAuthnRequest(
                f"a username has 1-{MAX_USERNAME_LENGTH} characters, a password at most {MAX_PASSWORD_LENGTH}"
            )
        wait = self.limiter.retry_after(ctx.source_ip or "-")
        if wait is not None:
            self._failed(ctx, username, "password", "rate limited")
            raise RateLimited(wait)
        locked = self.lockouts.locked_until(username)
        if locked is not None:
            self._failed(ctx, username, "password", "account locked")
            raise AccountLocked(locked)

        user, method, groups, reason = self._first_factor(username, password)
        if user is None:
            if reason.startswith("unavailable"):
                self._failed(ctx, username, "password", reason)
                raise ProviderDown(reason)
            self._count_failure(ctx, username, "password", reason)
            raise LoginFailed(GENERIC_FAILURE)
        if not user.active:
            self._failed(ctx, user.username, method, "user disabled or deleted")
            raise LoginFailed("user disabled or deleted")
        self.lockouts.clear(username)
        roles = grants_from_groups(groups, self._group_roles(method))
        methods = self.mfa_methods(user)
        if methods:
            return self._challenge(user, method, methods, roles, ctx)
        return self.issue_session(user, method, ctx, directory_roles=roles)

    def _first_factor(self, username: str, password: str) -> tuple[User | None, str, list[str], str]:
        """(user, provider, directory groups, "") on success, else (None, "", [], reason)."""
        reasons = []
        for provider in self.settings.password_providers:
            try:
                if provider == "local":
                    user = self.accounts.get(username)
                    local = user if user is not None and user.source == "local" else None
                    if not self.passwords.verify(local.password_hash if local else None, password):
                        raise BadCredentials("wrong password") if local else UnknownUser("no such local user")
                    assert local is not None
                    self.accounts.rehash(local, password)
                    return local, AuthMethod.LOCAL.value, [], ""
                if provider == "ldap" and self.ldap is not None:
                    found: ExternalUser = self.ldap.authenticate(username, password)
                    user = self.accounts.ensure_external(
                        found.username, "ldap", display_name=found.display_name, email=found.email
                    )
                    return user, AuthMethod.LDAP.value, found.groups, ""
            except BadCredentials as err:
                return None, "", [], f"{provider}: {err.reason}"
            except ProviderUnavailable as err:
                reasons.append(f"unavailable: {provider}: {err.reason}")
            except UnknownUser as err:
                reasons.append(f"{provider}: {err.reason}")
        # Unavailable counts only when no provider could say no.
        known = [r for r in reasons if not r.startswith("unavailable")]
        return None, "", [], "; ".join(known or reasons) or "no password provider configured"

    def _group_roles(self, method: str) -> dict[str, list[str]]:
        if method == AuthMethod.LDAP:
            return self.settings.ldap.group_roles
        if method == AuthMethod.OIDC:
            return self.settings.oidc.group_roles
        return {}

    # --- second factor ------------------------------------------------------------------------

    def mfa_methods(self, user: User) -> list[str]:
        """The second factors `user` has enrolled that the settings allow (none: no MFA)."""
        mfa = self.settings.mfa
        if not mfa.enabled:
            return []
        have = []
        if "totp" in mfa.methods and self.totp.enrolled(user.id):
            have.append("totp")
        if "webauthn" in mfa.methods and self.webauthn.credential_ids(user.id):
            have.append("webauthn")
        if "sms" in mfa.methods and user.phone and not have:
            have.append("sms")  # only when nothing better is enrolled: each one costs a message
        return have

    def _challenge(
        self, user: User, method: str, methods: list[str], roles: dict[str, list[str]], ctx: RequestContext
    ) -> MfaChallenge:
        webauthn_challenge = options = sms_code = None
        if "webauthn" in methods:
            webauthn_challenge, options = self.webauthn.authentication_options(user.id)
        if methods == ["sms"]:
            sms_code = new_sms_code()
            send_sms(self.settings.mfa, user.phone, sms_code, self.http)  # type: ignore[arg-type]
        challenge_id = self.challenges.create(
            user.id, "login", ctx, auth_method=method, webauthn_challenge=webauthn_challenge,
            sms_code=sms_code, directory_roles=roles,
        )  # fmt: skip
        self.audit.record(
            ev.auth_event(ev.MFA_CHALLENGED, ctx, subject=user.username, method=method, methods=methods)
        )
        return MfaChallenge(
            challenge_id=challenge_id,
            methods=methods,
            expires_at=self.clock() + timedelta(seconds=self.settings.mfa.challenge_ttl_s),
            webauthn_options=options,
        )

    def verify_mfa(
        self,
        challenge_id: str,
        ctx: RequestContext,
        *,
        code: str | None = None,
        webauthn: dict[str, Any] | None = None,
    ) -> SessionGrant:
        try:
            challenge = self.challenges.open(challenge_id, "login")
        except LoginFailed as err:
            self._failed(ctx, None, "mfa", err.message)
            raise
        user = self.accounts.get_by_id(challenge.user_id)
        if user is None or not user.active:
            self._failed(ctx, user.username if user else None, "mfa", "user disabled or deleted")
            raise LoginFailed("user disabled or deleted")
        method, reason = self._check_second_factor(user, challenge, code, webauthn)
        if reason is not None:
            self._count_failure(ctx, user.username, method, reason)
            raise LoginFailed(f"MFA failed: {reason}")
        if not self.challenges.consume(challenge):
            self._failed(ctx, user.username, method, "challenge already answered")
            raise LoginFailed("MFA failed: challenge already answered")
        self.lockouts.clear(user.username)
        return self.issue_session(
            user,
            challenge.auth_method or AuthMethod.LOCAL.value,
            ctx,
            mfa_verified_at=self.clock(),
            directory_roles=challenge.directory_roles or {},
            second_factor=method,
        )

    def _check_second_factor(
        self, user: User, challenge: Challenge, code: str | None, credential: dict[str, Any] | None
    ) -> tuple[str, str | None]:
        """(method, None) if the answer is good, else (method, why not)."""
        if credential is not None:
            if challenge.webauthn_challenge is None:
                return "webauthn", "no WebAuthn challenge was issued"
            return "webauthn", self.webauthn.verify(user.id, challenge.webauthn_challenge, credential)
        if not code:
            return "totp", "no code given"
        if len(code) > 16:
            return "totp", "malformed code"
        if challenge.sms_code_hash is not None:
            return "sms", None if sms_code_matches(challenge, code) else "invalid code"
        return "totp", self.totp.verify(user.id, code)

    def step_up(self, principal: Principal, code: str, ctx: RequestContext) -> None:
        """Pass MFA again on a live session (a TOTP code), renewing the admin grace period."""
        if principal.session_id is None:
            raise BadAuthnRequest("MFA is passed on a session (loomos login), not on an API or OIDC token")
        user = self.accounts.get_by_id(principal.user_id)
        assert user is not None
        reason = self.totp.verify(user.id, code) if len(code) <= 16 else "malformed code"
        if reason is not None:
            self._count_failure(ctx, user.username, "totp", reason)
            raise LoginFailed(f"MFA failed: {reason}")
        self.sessions.mark_mfa(principal.session_id, self.clock())
        self.cache.drop(session_id=principal.session_id)
        self.audit.record(ev.auth_event(
            ev.AUTH_SUCCEEDED, ctx, subject=user.username, method="totp", session_id=principal.session_id,
            reason="step-up MFA",
        ))  # fmt: skip

    # --- sessions -----------------------------------------------------------------------------

    def issue_session(
        self,
        user: User,
        method: str,
        ctx: RequestContext,
        *,
        mfa_verified_at: datetime | None = None,
        directory_roles: dict[str, list[str]] | None = None,
        second_factor: str | None = None,
        refresh_token: str | None = None,
        id_token: str | None = None,
    ) -> SessionGrant:
        token, session, revoked = self.sessions.create(
            user.id, method, ctx, mfa_verified_at=mfa_verified_at, directory_roles=directory_roles
        )
        for old in revoked:
            self.cache.drop(session_id=old)
        self.audit.record(ev.auth_event(
            ev.AUTH_SUCCEEDED, ctx, subject=user.username, method=method, session_id=session.id,
            second_factor=second_factor, revoked_sessions=revoked or None,
        ))  # fmt: skip
        from loomos.security.authn.resolver import roles_for

        roles, _ = roles_for(self, user.username, session.directory_roles, session.mfa_verified_at, method)
        return SessionGrant(token, session, user, roles, refresh_token, id_token)

    def refresh_session(self, principal: Principal, ctx: RequestContext) -> SessionGrant:
        """A new session token for the session `principal` holds; the old one stops working."""
        if principal.session_id is None:
            raise BadAuthnRequest(
                "only a session can be refreshed (an API token is renewed by making a new one)"
            )
        old = self.sessions.get(principal.session_id)
        user = self.accounts.get_by_id(principal.user_id)
        if old is None or user is None:
            raise NotAuthenticated("not logged in")
        self.revoke_session(old.id, "refreshed")
        return self.issue_session(
            user, old.auth_method, ctx, mfa_verified_at=old.mfa_verified_at,
            directory_roles={k: list(v) for k, v in old.directory_roles.items()},
        )  # fmt: skip

    def revoke_session(self, session_id: str, reason: str) -> bool:
        done = self.sessions.revoke(session_id, reason)
        self.cache.drop(session_id=session_id)
        return done

    def logout(self, principal: Principal, ctx: RequestContext) -> bool:
        if principal.session_id is None:
            raise BadAuthnRequest(
                "this credential is not a session: revoke an API token with `loomos tokens revoke`; "
                "an OIDC token ends at the provider"
            )
        done = self.revoke_session(principal.session_id, "logout")
        self.audit.record(ev.auth_event(
            ev.TOKEN_REVOKED, ctx, subject=principal.subject, method=principal.auth_method,
            session_id=principal.session_id, kind="session", reason="logout",
        ))  # fmt: skip
        return done

    # --- OIDC ---------------------------------------------------------------------------------

    def _oidc_provider(self) -> Any:
        if self.oidc is None:
            raise BadAuthnRequest("OIDC is not configured (security.authn.oidc.issuer_url)")
        return self.oidc

    def oidc_login(
        self,
        code: str,
        redirect_uri: str,
        ctx: RequestContext,
        *,
        code_verifier: str | None,
        nonce: str | None,
    ) -> SessionGrant:
        """Finish an authorization-code login: exchange the code (LoomCtl is the client), check
        the ID token against the provider's keys, and open a session."""
        oidc = self._oidc_provider()
        try:
            answer = oidc.exchange_code(code, redirect_uri, code_verifier)
            id_token = answer.get("id_token")
            if not isinstance(id_token, str):
                raise TokenInvalid("the provider returned no ID token")
            claims = oidc.validate(id_token, nonce=nonce)
        except ProviderError as err:
            self._failed(ctx, None, "oidc", err.reason)
            raise (
                ProviderDown(err.reason) if isinstance(err, ProviderUnavailable) else LoginFailed(err.reason)
            ) from None
        refresh = answer.get("refresh_token") if self.settings.oidc.token_refresh_enabled else None
        return self._oidc_session(oidc.user_from_claims(claims), ctx, refresh, id_token)

    def oidc_refresh(
        self, refresh_token: str, ctx: RequestContext, old: Principal | None = None
    ) -> SessionGrant:
        """A new session from the provider's refresh token: the provider says whether the user
        is still who they were (its userinfo answer, or a new ID token)."""
        if not self.settings.oidc.token_refresh_enabled:
            raise Forbidden("token refresh is disabled (security.authn.oidc.token_refresh_enabled)")
        oidc = self._oidc_provider()
        try:
            answer = oidc.refresh(refresh_token)
            id_token = answer.get("id_token")
            claims = (
                oidc.validate(id_token)
                if isinstance(id_token, str)
                else oidc.userinfo(answer["access_token"])
            )
        except ProviderError as err:
            self._failed(ctx, old.subject if old else None, "oidc", f"refresh: {err.reason}")
            raise (
                ProviderDown(err.reason)
                if isinstance(err, ProviderUnavailable)
                else NotAuthenticated(
                    "session expired: the OIDC provider refused the refresh token (loomos login)"
                )
            ) from None
        found = oidc.user_from_claims(claims)
        if old is not None:
            if old.subject != found.username:
                raise NotAuthenticated("the refresh token belongs to another user")
            if old.session_id:
                self.revoke_session(old.session_id, "refreshed")
        return self._oidc_session(found, ctx, answer.get("refresh_token") or refresh_token, id_token)

    def _oidc_session(
        self, found: ExternalUser, ctx: RequestContext, refresh: str | None, id_token: Any
    ) -> SessionGrant:
        user = self.accounts.ensure_external(
            found.username,
            "oidc",
            display_name=found.display_name,
            email=found.email,
            default_team=found.team,
        )
        if not user.active:
            self._failed(ctx, user.username, "oidc", "user disabled or deleted")
            raise LoginFailed("user disabled or deleted")
        roles = grants_from_groups(found.groups, self.settings.oidc.group_roles)
        return self.issue_session(
            user, AuthMethod.OIDC.value, ctx, mfa_verified_at=found.mfa_at, directory_roles=roles,
            refresh_token=refresh, id_token=id_token if isinstance(id_token, str) else None,
        )  # fmt: skip

    # --- audit helpers ------------------------------------------------------------------------

    def _failed(self, ctx: RequestContext, subject: str | None, method: str, reason: str) -> None:
        self.audit.record(ev.auth_event(ev.AUTH_FAILED, ctx, subject=subject, method=method, reason=reason))

    def _count_failure(self, ctx: RequestContext, username: str, method: str, reason: str) -> None:
        self._failed(ctx, username, method, reason)
        failure = self.lockouts.record_failure(username)
        if failure.locked_until is not None:
            event = ev.auth_event(
                ev.ACCOUNT_LOCKED,
                ctx,
                subject=username,
                method=method,
                reason=f"{failure.failures} failed logins",
                locked_until=failure.locked_until.isoformat(),
            )
            self.audit.record(event)


class ProviderDown(AuthnError):
    """No provider could check the credentials (LDAP or the OIDC provider unreachable)."""

    status = 503
