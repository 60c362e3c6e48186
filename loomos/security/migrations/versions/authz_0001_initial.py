"""authz: Casbin rules, the policy version counter, roles, revocations, and the quota ledger
(reservations and usage); the root of the `authz` branch. loomos/security/authz/tables.py
describes each table.

Revision ID: authz_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "authz_0001"
down_revision = None
branch_labels = ("authz",)
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    # Layout of the maintained Casbin SQLAlchemy adapter (sqlalchemy_adapter), which loads it.
    op.create_table(
        "authz_casbin_rule",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ptype", sa.String(255)),
        *[sa.Column(f"v{i}", sa.String(255)) for i in range(6)],
    )
    op.create_index("ix_authz_casbin_rule_ptype_v0", "authz_casbin_rule", ["ptype", "v0"])
    version = op.create_table(
        "authz_policy_version",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        _when("updated_at"),
        _when("seeded_at"),
        sa.Column("seed_source", sa.String(500)),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])
    op.create_table(
        "authz_roles",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("constraints", sa.JSON, nullable=False),
        sa.Column("builtin", sa.Boolean, nullable=False),
        _when("updated_at", False),
        sa.Column("updated_by", sa.String(128)),
    )
    op.create_table(
        "authz_revocations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("team", sa.String(63), nullable=False),
        sa.Column("role", sa.String(63), nullable=False),
        _when("revoked_at", False),
        sa.Column("revoked_by", sa.String(128)),
    )
    op.create_index("ix_authz_revocations_subject", "authz_revocations", ["subject"])
    op.create_table(
        "authz_reservations",
        sa.Column("workflow_id", sa.String(255), primary_key=True),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("team", sa.String(63), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("detail", sa.JSON),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("est_gpu_hours", sa.Float, nullable=False),
        sa.Column("est_cost_usd", sa.Float, nullable=False),
        sa.Column("policy_version", sa.BigInteger, nullable=False),
        _when("decided_at", False),
        _when("released_at"),
        sa.Column("release_reason", sa.String(200)),
    )
    # Admission counts what a team (and a user in it) holds: unreleased admitted rows.
    op.create_index("ix_authz_reservations_held", "authz_reservations", ["team", "released_at", "subject"])
    op.create_table(
        "authz_usage",
        sa.Column("workflow_id", sa.String(255), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("team", sa.String(63), nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("price_per_gpu_hour", sa.Float),
        _when("started_at", False),
        _when("ended_at"),
    )
    op.create_index("ix_authz_usage_team", "authz_usage", ["team", "started_at", "subject"])


def downgrade() -> None:
    for table in (
        "authz_usage", "authz_reservations", "authz_revocations", "authz_roles",
        "authz_policy_version", "authz_casbin_rule",
    ):  # fmt: skip
        op.drop_table(table)
