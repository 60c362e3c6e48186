"""The `security.authn` section of LoomOS's settings (pure pydantic: loomos.settings imports it).

Every key here needs its environment variable in VARIABLES (loomos.settings reads, documents
and passes them on to `loomos dev`'s children from that one list). The shape follows the
product documents' AuthConfig: a primary provider and fallbacks, then one subsection per
concern (oidc, ldap, mfa, sessions, lockout, tokens).

Group-to-role mappings (`oidc.group_roles`, `ldap.group_roles`) map a directory group to
"team:role" grants, e.g. {"ml-engineers": ["vision:ml_engineer", "nlp:data_scientist"]}.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from loomos.settings_vars import EnvVar

Provider = Literal["oidc", "ldap", "local"]
MfaMethod = Literal["totp", "webauthn", "sms"]
TEAM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_GRANT = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,62}):[a-z][a-z0-9_]{0,62}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_group_roles(v: dict[str, list[str]]) -> dict[str, list[str]]:
    for group, grants in v.items():
        for grant in grants:
            if not _GRANT.match(grant):
                raise ValueError(f"{group}: {grant!r} is not team:role (e.g. vision:ml_engineer)")
    return v


class OidcSettings(_Section):
    """The OIDC provider: its issuer (discovery at /.well-known/openid-configuration), the
    client LoomOS is registered as, and how bearer JWTs are checked."""

    issuer_url: str | None = None
    client_id: str = Field("loomos", min_length=1)
    client_secret: SecretStr | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email", "groups"])
    # Accepted `aud` values of bearer JWTs; empty: the client id.
    audiences: list[str] = Field(default_factory=list)
    token_validation: Literal["jwks"] = "jwks"
    token_refresh_enabled: bool = True
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "RS384", "RS512", "ES256", "PS256"])
    clock_skew_s: int = Field(60, ge=0, le=600)
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    team_claim: str | None = None
    group_roles: dict[str, list[str]] = Field(default_factory=dict)
    jwks_cache_s: int = Field(300, ge=0, le=86400)

    _roles = field_validator("group_roles")(classmethod(lambda cls, v: _check_group_roles(v)))

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, v: list[str]) -> list[str]:
        # An HS* algorithm next to a JWKS lets a token "signed" with the public key pass.
        bad = [a for a in v if not re.match(r"^(RS|PS|ES)(256|384|512)$|^EdDSA$", a)]
        if bad:
            raise ValueError(f"{bad}: only asymmetric algorithms (RS*, PS*, ES*, EdDSA) check against a JWKS")
        return v


class LdapSettings(_Section):
    """A directory: a service bind finds the user's DN, then LoomOS binds as the user."""

    url: str = "ldap://127.0.0.1:389"
    start_tls: bool = False
    bind_dn: str | None = None
    bind_password: SecretStr | None = None
    user_base_dn: str | None = None  # None: the whole directory
    user_filter: str = "(uid={username})"
    display_name_attribute: str = "cn"
    group_base_dn: str | None = None
    group_filter: str = "(|(member={user_dn})(uniqueMember={user_dn})(memberUid={username}))"
    group_name_attribute: str = "cn"
    group_roles: dict[str, list[str]] = Field(default_factory=dict)
    timeout_s: float = Field(5, gt=0, le=120)

    _roles = field_validator("group_roles")(classmethod(lambda cls, v: _check_group_roles(v)))


class MfaSettings(_Section):
    enabled: bool = True
    required_for_admin: bool = True
    methods: list[MfaMethod] = Field(default_factory=lambda: ["totp", "webauthn"])
    grace_period_hours: float = Field(4, ge=0, le=24 * 30)
    totp_issuer: str = "LoomOS"
    challenge_ttl_s: int = Field(300, ge=30, le=3600)
    webauthn_rp_id: str = "localhost"
    webauthn_rp_name: str = "LoomOS"
    webauthn_origins: list[str] = Field(default_factory=lambda: ["http://localhost:8080"])
    sms_gateway_url: str | None = None


class SessionSettings(_Section):
    timeout_minutes: int = Field(480, ge=1, le=60 * 24 * 90)
    sliding_expiration: bool = True
    concurrent_sessions_limit: int = Field(3, ge=0, le=1000)  # 0: no limit
    secure_cookies: bool = True
    cookie_name: str = Field("loomos_session", pattern=r"^[A-Za-z0-9_-]{1,64}$")


class LockoutSettings(_Section):
    max_failures: int = Field(5, ge=1, le=1000)
    window_minutes: float = Field(15, gt=0, le=24 * 60)
    lockout_minutes: float = Field(15, gt=0, le=24 * 60)
    # Password attempts per source address per minute, in each API process.
    attempts_per_minute: int = Field(20, ge=1, le=10000)


class TokenSettings(_Section):
    default_expiry_days: int = Field(90, ge=1, le=3650)
    max_expiry_days: int = Field(365, ge=1, le=3650)
    # In-process cache of token lookups: a revoked token still works this long in *other*
    # API processes (the revoking process drops it at once).
    cache_ttl_s: float = Field(5, ge=0, le=300)
    # A server-side key: token hashes become HMAC-SHA256 (a stolen table cannot be checked
    # offline). Changing it invalidates every API token and session.
    pepper: SecretStr | None = None


class AuthnSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    primary_provider: Provider = "local"
    fallback_providers: list[Provider] = Field(default_factory=list)
    default_team: str = Field("default", pattern=TEAM_PATTERN)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    ldap: LdapSettings = Field(default_factory=LdapSettings)
    mfa: MfaSettings = Field(default_factory=MfaSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    lockout: LockoutSettings = Field(default_factory=LockoutSettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    # Set only by loomos.devstack for its own children: a local admin is created on start.
    dev_bootstrap: bool = False

    @model_validator(mode="after")
    def _providers(self) -> AuthnSettings:
        chain = [self.primary_provider, *self.fallback_providers]
        if len(set(chain)) != len(chain):
            raise ValueError(f"fallback_providers repeats a provider: {chain}")
        if "oidc" in chain and not self.oidc.issuer_url:
            raise ValueError("the oidc provider needs oidc.issuer_url")
        return self

    @property
    def password_providers(self) -> list[Provider]:
        """The providers a username and password are tried against, in order."""
        return [p for p in (self.primary_provider, *self.fallback_providers) if p != "oidc"]


def _var(name: str, key: str, description: str) -> EnvVar:
    return EnvVar(f"LOOMOS_AUTHN_{name}", f"security.authn.{key}", description)


VARIABLES: tuple[EnvVar, ...] = (
    _var("PRIMARY_PROVIDER", "primary_provider", "oidc, ldap or local: what `loomos login` uses"),
    _var("FALLBACK_PROVIDERS", "fallback_providers", 'tried after the primary, JSON ["ldap", "local"]'),
    _var("DEFAULT_TEAM", "default_team", "team of users who have none of their own"),
    _var("OIDC_ISSUER_URL", "oidc.issuer_url", "OIDC issuer URL (discovery under it)"),
    _var("OIDC_CLIENT_ID", "oidc.client_id", "LoomOS's OIDC client id"),
    _var("OIDC_CLIENT_SECRET", "oidc.client_secret", "its client secret (code exchange, refresh)"),
    _var("OIDC_SCOPES", "oidc.scopes", 'scopes asked at login, JSON ["openid", "profile", "groups"]'),
    _var("OIDC_AUDIENCES", "oidc.audiences", "accepted `aud` of bearer JWTs, JSON (empty: client id)"),
    _var("OIDC_TOKEN_VALIDATION", "oidc.token_validation", "how bearer JWTs are checked: jwks"),
    _var("OIDC_TOKEN_REFRESH_ENABLED", "oidc.token_refresh_enabled", "renew logins with refresh tokens"),
    _var("OIDC_ALGORITHMS", "oidc.algorithms", "accepted JWT algorithms, JSON list (asymmetric only)"),
    _var("OIDC_CLOCK_SKEW_S", "oidc.clock_skew_s", "leeway on exp/iat/nbf, seconds"),
    _var("OIDC_USERNAME_CLAIM", "oidc.username_claim", "claim that names the user (else `sub`)"),
    _var("OIDC_GROUPS_CLAIM", "oidc.groups_claim", "claim listing the user's groups"),
    _var("OIDC_TEAM_CLAIM", "oidc.team_claim", "claim naming the user's default team (empty: default_team)"),
    _var("OIDC_GROUP_ROLES", "oidc.group_roles", 'JSON {"group": ["team:role", ...]}'),
    _var("OIDC_JWKS_CACHE_S", "oidc.jwks_cache_s", "how long the provider's keys are cached"),
    _var("LDAP_URL", "ldap.url", "ldap:// or ldaps:// URL of the directory"),
    _var("LDAP_START_TLS", "ldap.start_tls", "upgrade ldap:// with StartTLS"),
    _var("LDAP_BIND_DN", "ldap.bind_dn", "service account that searches users (empty: anonymous)"),
    _var("LDAP_BIND_PASSWORD", "ldap.bind_password", "its password"),
    _var("LDAP_USER_BASE_DN", "ldap.user_base_dn", "where users are searched"),
    _var("LDAP_USER_FILTER", "ldap.user_filter", "filter that finds a user, {username} escaped in"),
    _var("LDAP_DISPLAY_NAME_ATTRIBUTE", "ldap.display_name_attribute", "attribute with the user's name"),
    _var("LDAP_GROUP_BASE_DN", "ldap.group_base_dn", "where groups are searched (empty: no groups)"),
    _var("LDAP_GROUP_FILTER", "ldap.group_filter", "filter of a user's groups ({user_dn}, {username})"),
    _var("LDAP_GROUP_NAME_ATTRIBUTE", "ldap.group_name_attribute", "attribute naming a group"),
    _var("LDAP_GROUP_ROLES", "ldap.group_roles", 'JSON {"group": ["team:role", ...]}'),
    _var("LDAP_TIMEOUT_S", "ldap.timeout_s", "connect and operation timeout, seconds"),
    _var("MFA_ENABLED", "mfa.enabled", "challenge users who enrolled a second factor"),
    _var("MFA_REQUIRED_FOR_ADMIN", "mfa.required_for_admin", "platform_admin counts only after MFA"),
    _var("MFA_METHODS", "mfa.methods", 'JSON ["totp", "webauthn", "sms"]'),
    _var("MFA_GRACE_PERIOD_HOURS", "mfa.grace_period_hours", "how long a passed MFA counts for admin"),
    _var("MFA_TOTP_ISSUER", "mfa.totp_issuer", "issuer name shown by authenticator apps"),
    _var("MFA_CHALLENGE_TTL_S", "mfa.challenge_ttl_s", "how long an MFA challenge may be answered"),
    _var("MFA_WEBAUTHN_RP_ID", "mfa.webauthn_rp_id", "WebAuthn relying party id (the site's domain)"),
    _var("MFA_WEBAUTHN_RP_NAME", "mfa.webauthn_rp_name", "WebAuthn relying party name"),
    _var("MFA_WEBAUTHN_ORIGINS", "mfa.webauthn_origins", "accepted WebAuthn origins, JSON list"),
    _var("MFA_SMS_GATEWAY_URL", "mfa.sms_gateway_url", "HTTP endpoint codes are POSTed to (sms method)"),
    _var("SESSION_TIMEOUT_MINUTES", "sessions.timeout_minutes", "a session's lifetime (idle, if sliding)"),
    _var("SESSION_SLIDING_EXPIRATION", "sessions.sliding_expiration", "each use extends a session"),
    _var("SESSION_CONCURRENT_LIMIT", "sessions.concurrent_sessions_limit", "sessions per user (0: any)"),
    _var("SESSION_SECURE_COOKIES", "sessions.secure_cookies", "Secure cookies when served over https"),
    _var("SESSION_COOKIE_NAME", "sessions.cookie_name", "the browser session cookie's name"),
    _var("LOCKOUT_MAX_FAILURES", "lockout.max_failures", "failed logins that lock an account"),
    _var("LOCKOUT_WINDOW_MINUTES", "lockout.window_minutes", "window the failures are counted in"),
    _var("LOCKOUT_MINUTES", "lockout.lockout_minutes", "how long a locked account stays locked"),
    _var("LOCKOUT_ATTEMPTS_PER_MINUTE", "lockout.attempts_per_minute", "password tries per address a minute"),
    _var("TOKEN_DEFAULT_EXPIRY_DAYS", "tokens.default_expiry_days", "API token lifetime when none is asked"),
    _var("TOKEN_MAX_EXPIRY_DAYS", "tokens.max_expiry_days", "longest API token lifetime"),
    _var("TOKEN_CACHE_TTL_S", "tokens.cache_ttl_s", "seconds a token lookup is cached per API process"),
    _var("TOKEN_PEPPER", "tokens.pepper", "server key for token hashes (HMAC); changing it logs all out"),
    _var("DEV_BOOTSTRAP", "dev_bootstrap", "create a local admin and token (set by `loomos dev` only)"),
)  # fmt: skip
