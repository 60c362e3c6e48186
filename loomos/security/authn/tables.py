"""Authentication's tables (SQLAlchemy Core), created by the `authn` Alembic branch
(loomos/security/migrations/versions/authn_0001_initial.py; keep the two in step).

Secrets are never stored as given: API tokens and session tokens as a (keyed) SHA-256 of their
random part, passwords as argon2id hashes. A TOTP secret must be readable by the server to
check a code, so it lives only here, never in an answer after enrolment. Times are UTC.
Role grants are not here: Casbin holds them per team (loomos.security.authz).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)

metadata = MetaData()

users = Table(
    "authn_users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(128), nullable=False, unique=True),
    Column("display_name", String(256)),
    Column("email", String(320)),
    # Where the account comes from: local (a password here), ldap or oidc (seen at login).
    Column("source", String(16), nullable=False),
    Column("phone", String(32)),  # confirmed number for SMS codes
    Column("password_hash", String(256)),
    Column("default_team", String(63)),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True)),
)

api_tokens = Table(
    "authn_api_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(32), nullable=False),  # loomos_pat_ab12: shown in lists, not secret
    Column("user_id", String(36), ForeignKey("authn_users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("scopes", JSON),  # a list of Permission values; NULL: the owner's permissions
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_authn_api_tokens_user", "user_id"),
)

sessions = Table(
    "authn_sessions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", String(36), ForeignKey("authn_users.id", ondelete="CASCADE"), nullable=False),
    Column("auth_method", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("source_ip", String(64)),
    Column("user_agent", String(500)),
    Column("mfa_verified_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoke_reason", String(64)),
    Column("directory_roles", JSON),  # team -> roles an LDAP/OIDC login's groups granted
    Index("ix_authn_sessions_user", "user_id", "revoked_at"),
)

totp_secrets = Table(
    "authn_totp",
    metadata,
    Column("user_id", String(36), ForeignKey("authn_users.id", ondelete="CASCADE"), primary_key=True),
    Column("secret", String(64)),  # the confirmed secret (NULL: none yet)
    Column("pending_secret", String(64)),  # an enrolment waiting for its first code
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("confirmed_at", DateTime(timezone=True)),
    # The last accepted time step: a code of that step or an earlier one is a replay.
    Column("last_used_step", BigInteger),
)

webauthn_credentials = Table(
    "authn_webauthn_credentials",
    metadata,
    Column("id", String(700), primary_key=True),  # the credential id, base64url
    Column("user_id", String(36), ForeignKey("authn_users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("public_key", LargeBinary, nullable=False),  # COSE key
    Column("sign_count", BigInteger, nullable=False, default=0),
    Column("transports", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True)),
    Index("ix_authn_webauthn_user", "user_id"),
)

# A password login waiting for its second factor, or a WebAuthn registration in progress.
mfa_challenges = Table(
    "authn_mfa_challenges",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", String(36), ForeignKey("authn_users.id", ondelete="CASCADE"), nullable=False),
    Column("purpose", String(16), nullable=False),  # login | register
    Column("auth_method", String(16)),  # the first factor's provider (login)
    Column("webauthn_challenge", LargeBinary),
    Column("sms_code_hash", String(64)),
    Column("phone", String(32)),  # the number an SMS enrolment confirms
    Column("directory_roles", JSON),  # what the first factor's directory granted (login)
    Column("source_ip", String(64)),
    Column("user_agent", String(500)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("consumed_at", DateTime(timezone=True)),
)

# Failed password logins per username (lower-cased), whether or not the account exists, so
# that a lockout does not tell which names are real.
login_failures = Table(
    "authn_login_failures",
    metadata,
    Column("username", String(128), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_started_at", DateTime(timezone=True), nullable=False),
    Column("locked_until", DateTime(timezone=True)),
)

ALL = (users, api_tokens, sessions, totp_secrets, webauthn_credentials, mfa_challenges, login_failures)


def as_utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)
