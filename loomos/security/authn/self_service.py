"""What a signed-in user does for themselves: API tokens (create, list, revoke) and second
factors (TOTP, WebAuthn, an SMS number). Each change is audited.

A token's scope can only narrow: a token made with another token gets at most that token's
scope. A platform_admin whose MFA is not fresh (the admin rule) cannot make tokens, which
would otherwise carry the role past the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loomos.security.authn import audit as ev
from loomos.security.authn.api_tokens import ApiToken, TokenRequestError
from loomos.security.authn.audit import RequestContext
from loomos.security.authn.authenticator import Authenticator
from loomos.security.authn.errors import BadAuthnRequest, Forbidden, LoginFailed, NotFound
from loomos.security.authn.mfa import new_sms_code, send_sms, sms_code_matches
from loomos.security.authn.mfa_totp import TotpEnrolment
from loomos.security.authn.principal import Principal

MAX_PHONE_LENGTH = 20


@dataclass
class SelfService:
    authn: Authenticator

    # --- API tokens ---------------------------------------------------------------------------

    def create_token(
        self,
        who: Principal,
        name: str,
        scopes: list[str] | None,
        expires_in_days: int | None,
        ctx: RequestContext,
    ) -> tuple[str, ApiToken]:
        if who.admin_needs_mfa:
            raise Forbidden(
                "platform_admin must pass MFA (loomos login, then the code) before making API tokens"
            )
        if who.permissions is not None:
            wider = sorted(set(scopes or who.permissions) - set(who.permissions))
            if scopes is None:
                scopes = list(who.permissions)
            elif wider:
                raise Forbidden(f"a token cannot grant more than the token that makes it: {wider}")
        try:
            secret, token = self.authn.tokens.create(who.user_id, name, scopes, expires_in_days)
        except TokenRequestError as err:
            raise BadAuthnRequest(str(err)) from None
        self.authn.audit.record(
            ev.auth_event(
                ev.TOKEN_CREATED, ctx, subject=who.subject, method=who.auth_method, session_id=who.session_id,
                token_id=token.id, token_prefix=token.prefix, name=token.name, scopes=token.scopes,
                expires_at=token.expires_at.isoformat(),
            )
        )  # fmt: skip
        return secret, token

    def list_tokens(self, who: Principal) -> list[ApiToken]:
        return self.authn.tokens.list_for(who.user_id)

    def revoke_token(self, who: Principal, token_id: str, ctx: RequestContext) -> ApiToken:
        token = self.authn.tokens.get(token_id) if len(token_id) <= 64 else None
        if token is None or token.user_id != who.user_id:
            raise NotFound(f"no token {token_id[:64]} of yours")
        self.authn.tokens.revoke(token.id)
        self.authn.cache.drop(token_id=token.id)
        self.authn.audit.record(
            ev.auth_event(
                ev.TOKEN_REVOKED, ctx, subject=who.subject, method=who.auth_method, session_id=who.session_id,
                token_id=token.id, token_prefix=token.prefix, kind="api_token",
            )
        )  # fmt: skip
        return token

    # --- second factors -----------------------------------------------------------------------

    def _user(self, who: Principal) -> Any:
        if who.permissions is not None:
            raise Forbidden("second factors are managed from a session, not with an API token")
        user = self.authn.accounts.get_by_id(who.user_id)
        assert user is not None
        return user

    def totp_begin(self, who: Principal) -> TotpEnrolment:
        user = self._user(who)
        return self.authn.totp.begin(user.id, user.username)

    def totp_confirm(self, who: Principal, code: str, ctx: RequestContext) -> None:
        user = self._user(who)
        reason = self.authn.totp.confirm(user.id, code[:16])
        if reason is not None:
            raise BadAuthnRequest(f"TOTP not enrolled: {reason}")
        if who.session_id:
            # The code just given is a passed second factor for this session too.
            self.authn.sessions.mark_mfa(who.session_id, self.authn.clock())
            self.authn.cache.drop(session_id=who.session_id)
        self.authn.audit.record(
            ev.auth_event(
                ev.AUTH_SUCCEEDED, ctx, subject=user.username, method="totp", reason="TOTP enrolled"
            )
        )

    def webauthn_begin(self, who: Principal, ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        user = self._user(who)
        try:
            challenge, options = self.authn.webauthn.registration_options(
                user.id, user.username, user.display_name
            )
        except ValueError as err:
            raise BadAuthnRequest(str(err)) from None
        challenge_id = self.authn.challenges.create(user.id, "register", ctx, webauthn_challenge=challenge)
        return challenge_id, options

    def webauthn_finish(
        self, who: Principal, challenge_id: str, credential: dict[str, Any], name: str, ctx: RequestContext
    ) -> None:
        user = self._user(who)
        challenge = self.authn.challenges.open(challenge_id, "register")
        if challenge.user_id != user.id or challenge.webauthn_challenge is None:
            raise LoginFailed("unknown or expired MFA challenge")
        reason = self.authn.webauthn.register(user.id, challenge.webauthn_challenge, credential, name)
        if reason is not None:
            raise BadAuthnRequest(reason)
        self.authn.challenges.consume(challenge)
        self.authn.audit.record(
            ev.auth_event(
                ev.AUTH_SUCCEEDED, ctx, subject=user.username, method="webauthn", reason="key registered"
            )
        )

    def sms_begin(self, who: Principal, phone: str, ctx: RequestContext) -> str:
        user = self._user(who)
        if "sms" not in self.authn.settings.mfa.methods:
            raise BadAuthnRequest("SMS is not an MFA method here (security.authn.mfa.methods)")
        digits = phone.replace(" ", "")
        if not (digits.startswith("+") and digits[1:].isdigit() and 8 <= len(digits) <= MAX_PHONE_LENGTH):
            raise BadAuthnRequest("a phone number is +<country><number>, digits only")
        code = new_sms_code()
        send_sms(self.authn.settings.mfa, digits, code, self.authn.http)
        return self.authn.challenges.create(user.id, "sms", ctx, sms_code=code, phone=digits)

    def sms_confirm(self, who: Principal, challenge_id: str, code: str, ctx: RequestContext) -> None:
        user = self._user(who)
        challenge = self.authn.challenges.open(challenge_id, "sms")
        if challenge.user_id != user.id or not sms_code_matches(challenge, code[:16]):
            raise LoginFailed("MFA failed: invalid code")
        self.authn.challenges.consume(challenge)
        self.authn.accounts.set_phone(user, challenge.phone)
        self.authn.audit.record(
            ev.auth_event(
                ev.AUTH_SUCCEEDED, ctx, subject=user.username, method="sms", reason="phone confirmed"
            )
        )
