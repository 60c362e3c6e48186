"""The bodies of LoomCtl's /api/v1/auth routes, shared by the API and the SDK (pure pydantic).

Bounds are checked here, before anything is hashed: a username of 128 characters, a password
of 1024, an MFA code of 16, so a request of megabytes is a 422, not a minute of argon2.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from loomos.models.permissions import Permission


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class SessionInfo(BaseModel):
    """A session just opened: the token is shown once."""

    token: str
    session_id: str
    subject: str
    auth_method: str
    expires_at: datetime
    login_time: datetime
    source_ip: str | None = None
    user_agent: str | None = None
    roles: dict[str, list[str]] = Field(default_factory=dict)
    mfa_verified_at: datetime | None = None
    # OIDC logins: the provider's refresh token (POST /auth/refresh) and ID token.
    refresh_token: str | None = None
    id_token: str | None = None


class MfaChallengeInfo(BaseModel):
    challenge_id: str
    methods: list[str]
    expires_at: datetime
    webauthn_options: dict[str, Any] | None = None


class LoginResponse(BaseModel):
    """Either a session, or an MFA challenge to answer at POST /auth/mfa/verify."""

    mfa_required: bool
    session: SessionInfo | None = None
    challenge: MfaChallengeInfo | None = None


class MfaVerifyRequest(BaseModel):
    # Without a challenge id: a step-up on the caller's own session (TOTP code).
    challenge_id: str | None = Field(None, max_length=100)
    code: str | None = Field(None, max_length=16)
    webauthn: dict[str, Any] | None = None


class RefreshRequest(BaseModel):
    # OIDC: the provider's refresh token; without it, the caller's session is renewed.
    refresh_token: str | None = Field(None, max_length=8192)


class OidcCallbackRequest(BaseModel):
    code: str = Field(min_length=1, max_length=4096)
    redirect_uri: str = Field(min_length=1, max_length=2048)
    code_verifier: str | None = Field(None, max_length=256)
    nonce: str | None = Field(None, max_length=256)


class OidcInfo(BaseModel):
    issuer: str
    client_id: str
    scopes: list[str]
    authorization_endpoint: str | None = None


class ProvidersInfo(BaseModel):
    """How to log in here (unauthenticated: the CLI asks before it has credentials)."""

    primary: str
    password_providers: list[str]
    oidc: OidcInfo | None = None
    mfa_methods: list[str] = Field(default_factory=list)


class Me(BaseModel):
    subject: str
    display_name: str | None = None
    team: str
    roles: dict[str, list[str]] = Field(default_factory=dict)
    permissions: list[str] | None = None
    auth_method: str
    session_id: str | None = None
    token_id: str | None = None
    mfa_verified_at: datetime | None = None
    admin_needs_mfa: bool = False
    mfa_enrolled: list[str] = Field(default_factory=list)
    expires_at: datetime | None = None


class TokenCreateRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[Permission] | None = Field(
        None, description="a subset of your permissions; none: all of them"
    )
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class TokenInfo(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str] | None = None
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class TokenCreated(TokenInfo):
    token: str = Field(description="shown once: store it now")


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class TotpEnrolment(BaseModel):
    otpauth_uri: str
    qr_svg: str


class CodeRequest(BaseModel):
    code: str = Field(min_length=1, max_length=16)


class WebAuthnBegin(BaseModel):
    challenge_id: str
    options: dict[str, Any]


class WebAuthnFinish(BaseModel):
    challenge_id: str = Field(max_length=100)
    credential: dict[str, Any]
    name: str = Field("security key", max_length=100)


class SmsBegin(BaseModel):
    phone: str = Field(min_length=8, max_length=20)


class SmsConfirm(BaseModel):
    challenge_id: str = Field(max_length=100)
    code: str = Field(min_length=1, max_length=16)


class Done(BaseModel):
    ok: bool = True
    detail: str | None = None
