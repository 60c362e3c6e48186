"""The authorization tables (created by the `authz` Alembic branch, authz_0001):

- authz_casbin_rule: Casbin's rules (p: role -> permission, g: user/role -> role in a team),
  in the maintained SQLAlchemy adapter's layout (`sqlalchemy_adapter`, which loads them);
- authz_policy_version: one row, a counter every policy change increments in the same
  transaction; each process polls it and reloads when it moved;
- authz_roles: every role that exists (a grant of anything else is refused), its description
  and constraints;
- authz_revocations: grants taken away (and users removed: role "*"), so that a role an older
  identity still carries is not honoured once it was revoked;
- authz_reservations: the quota ledger, one row per job workflow: the admission decision and,
  while it is admitted and not released, the share it holds (a concurrent-job slot);
- authz_usage: one row per attempt that ran: GPUs, price, start and end, from which GPU-hours
  and running cost accrue (an open row accrues up to "now").

Times are UTC; SQLite hands them back naive, `aware()` puts the zone back.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy_adapter.adapter import create_casbin_rule_class

RULE_TABLE = "authz_casbin_rule"
# The adapter's mapped class for our table name (its columns: id, ptype, v0..v5).
CasbinRule = create_casbin_rule_class(RULE_TABLE)

metadata = MetaData()


def _when(name: str, nullable: bool = True) -> Column:  # type: ignore[type-arg]
    return Column(name, DateTime(timezone=True), nullable=nullable)


policy_version = Table(
    "authz_policy_version",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", BigInteger, nullable=False),
    _when("updated_at"),
    _when("seeded_at"),
    Column("seed_source", String(500)),
)

roles = Table(
    "authz_roles",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("description", String(500), nullable=False),
    Column("constraints", JSON, nullable=False),
    Column("builtin", Boolean, nullable=False),
    _when("updated_at", False),
    Column("updated_by", String(128)),
)

revocations = Table(
    "authz_revocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject", String(128), nullable=False, index=True),
    Column("team", String(63), nullable=False),
    Column("role", String(63), nullable=False),  # "*": every role (the user was removed)
    _when("revoked_at", False),
    Column("revoked_by", String(128)),
)

reservations = Table(
    "authz_reservations",
    metadata,
    Column("workflow_id", String(255), primary_key=True),
    Column("job_id", String(255), nullable=False),
    Column("subject", String(128), nullable=False),  # who was authorized (and is accountable)
    Column("owner", String(128), nullable=False),  # the job's user
    Column("team", String(63), nullable=False),
    Column("decision", String(16), nullable=False),  # admitted | rejected
    Column("reason", Text),
    Column("detail", JSON),  # the AdmissionDecision, so a retried admission answers the same
    Column("gpus", Integer, nullable=False),
    Column("est_gpu_hours", Float, nullable=False),
    Column("est_cost_usd", Float, nullable=False),
    Column("policy_version", BigInteger, nullable=False),
    _when("decided_at", False),
    _when("released_at"),
    Column("release_reason", String(200)),
)

usage = Table(
    "authz_usage",
    metadata,
    Column("workflow_id", String(255), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("subject", String(128), nullable=False),
    Column("team", String(63), nullable=False),
    Column("gpus", Integer, nullable=False),
    Column("price_per_gpu_hour", Float),
    _when("started_at", False),
    _when("ended_at"),
)


def aware(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite returns naive ones)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
