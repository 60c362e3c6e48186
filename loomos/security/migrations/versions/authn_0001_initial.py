"""authn: users, API tokens, sessions, TOTP and WebAuthn credentials, MFA challenges, failed
logins (the root of the `authn` branch; loomos/security/authn/tables.py describes them).

Revision ID: authn_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "authn_0001"
down_revision = None
branch_labels = ("authn",)
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _user_fk(primary_key: bool = False) -> sa.Column:
    return sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("authn_users.id", ondelete="CASCADE"),
        nullable=False, primary_key=primary_key,
    )  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "authn_users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("username", sa.String(128), nullable=False, unique=True),
        sa.Column("display_name", sa.String(256)),
        sa.Column("email", sa.String(320)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("phone", sa.String(32)),
        sa.Column("password_hash", sa.String(256)),
        sa.Column("default_team", sa.String(63)),
        sa.Column("disabled", sa.Boolean, nullable=False),
        _when("created_at", False),
        _when("updated_at", False),
        _when("deleted_at"),
    )
    op.create_table(
        "authn_api_tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(32), nullable=False),
        _user_fk(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("scopes", sa.JSON),
        _when("created_at", False),
        _when("expires_at", False),
        _when("last_used_at"),
        _when("revoked_at"),
    )
    op.create_index("ix_authn_api_tokens_user", "authn_api_tokens", ["user_id"])
    op.create_table(
        "authn_sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        _user_fk(),
        sa.Column("auth_method", sa.String(16), nullable=False),
        _when("created_at", False),
        _when("last_seen_at", False),
        _when("expires_at", False),
        sa.Column("source_ip", sa.String(64)),
        sa.Column("user_agent", sa.String(500)),
        _when("mfa_verified_at"),
        _when("revoked_at"),
        sa.Column("revoke_reason", sa.String(64)),
        sa.Column("directory_roles", sa.JSON),
    )
    op.create_index("ix_authn_sessions_user", "authn_sessions", ["user_id", "revoked_at"])
    op.create_table(
        "authn_totp",
        _user_fk(primary_key=True),
        sa.Column("secret", sa.String(64)),
        sa.Column("pending_secret", sa.String(64)),
        _when("created_at", False),
        _when("confirmed_at"),
        sa.Column("last_used_step", sa.BigInteger),
    )
    op.create_table(
        "authn_webauthn_credentials",
        sa.Column("id", sa.String(700), primary_key=True),
        _user_fk(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("sign_count", sa.BigInteger, nullable=False),
        sa.Column("transports", sa.JSON),
        _when("created_at", False),
        _when("last_used_at"),
    )
    op.create_index("ix_authn_webauthn_user", "authn_webauthn_credentials", ["user_id"])
    op.create_table(
        "authn_mfa_challenges",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        _user_fk(),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("auth_method", sa.String(16)),
        sa.Column("webauthn_challenge", sa.LargeBinary),
        sa.Column("sms_code_hash", sa.String(64)),
        sa.Column("phone", sa.String(32)),
        sa.Column("directory_roles", sa.JSON),
        sa.Column("source_ip", sa.String(64)),
        sa.Column("user_agent", sa.String(500)),
        sa.Column("attempts", sa.Integer, nullable=False),
        _when("created_at", False),
        _when("expires_at", False),
        _when("consumed_at"),
    )
    op.create_table(
        "authn_login_failures",
        sa.Column("username", sa.String(128), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        _when("window_started_at", False),
        _when("locked_until"),
    )


def downgrade() -> None:
    for table in (
        "authn_login_failures", "authn_mfa_challenges", "authn_webauthn_credentials", "authn_totp",
        "authn_sessions", "authn_api_tokens", "authn_users",
    ):  # fmt: skip
        op.drop_table(table)
