"""The quota ledger: what jobs hold (reservations) and what they used (usage), in the security
database. One ledger for everyone who limits work: role constraints and team quotas at
admission read and write it, and a scheduler's fair share can read usage from it.

- A reservation is a job workflow's admission decision. Admitted and not released, it holds a
  concurrent-job slot; `release` ends that, once, whichever way the job ended.
- A usage row is one attempt that ran: its GPUs and price per GPU-hour, started and ended.
  GPU-hours and running cost accrue from these: an ended row for its duration, an open one up
  to "now". So a month's limit is seen as soon as it is reached, with no periodic activity
  writing counters; and a job whose worker vanished stops accruing when its reservation is
  released (its open rows are closed then).

Concurrency: admission decides inside `ledger.transaction(team)`, which serialises deciders of
one team (Postgres: a transaction-scoped advisory lock on the team; SQLite: the database's
write lock, BEGIN IMMEDIATE). Two submits at a limit cannot both count the same free slot.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine, RowMapping

from loomos.security.authz import tables as t

_LOCK_NAMESPACE = b"loomos-quota-ledger:"


def month_start(now: datetime) -> datetime:
    """The first instant of `now`'s calendar month, UTC: monthly limits reset there."""
    now = now.astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _lock_key(team: str) -> int:
    digest = hashlib.blake2b(_LOCK_NAMESPACE + team.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True)
class Usage:
    """Accrued use in a window: GPU-hours of every attempt, and the cost of those still open
    (ended attempts' cost is in LoomDB's cost.recorded events)."""

    gpu_hours: float
    open_cost_usd: float


class QuotaLedger:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextlib.contextmanager
    def transaction(self, team: str) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_lock_key(team),))
            yield conn

    # --- reservations ----------------------------------------------------------------------

    @staticmethod
    def find(conn: Connection, workflow_id: str) -> RowMapping | None:
        row = conn.execute(select(t.reservations).where(t.reservations.c.workflow_id == workflow_id))
        return row.mappings().first()

    @staticmethod
    def held(conn: Connection, team: str, subject: str | None = None) -> list[str]:
        """Workflow ids of the admitted, unreleased reservations of a team (or one user in it)."""
        r = t.reservations.c
        query = select(r.workflow_id).where(r.team == team, r.decision == "admitted", r.released_at.is_(None))
        if subject is not None:
            query = query.where(r.subject == subject)
        return [row[0] for row in conn.execute(query)]

    @staticmethod
    def record(conn: Connection, **values: object) -> None:
        conn.execute(insert(t.reservations).values(**values))

    def release(self, workflow_id: str, reason: str, at: datetime) -> bool:
        """End the reservation and close the job's open usage; False if nothing was held.
        Idempotent: the first release's time and reason stay."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.reservations)
                .where(t.reservations.c.workflow_id == workflow_id, t.reservations.c.released_at.is_(None))
                .values(released_at=at, release_reason=reason[:200])
            )
            conn.execute(
                update(t.usage)
                .where(t.usage.c.workflow_id == workflow_id, t.usage.c.ended_at.is_(None))
                .values(ended_at=at)
            )
            return bool(done.rowcount)

    def held_anywhere(self, team: str | None = None) -> list[RowMapping]:
        r = t.reservations.c
        query = select(t.reservations).where(r.decision == "admitted", r.released_at.is_(None))
        if team is not None:
            query = query.where(r.team == team)
        with self.engine.connect() as conn:
            return list(conn.execute(query.order_by(r.decided_at)).mappings())

    # --- usage -----------------------------------------------------------------------------

    def mark(
        self,
        workflow_id: str,
        attempt: int,
        event: str,
        at: datetime,
        gpus: int = 0,
        price_per_gpu_hour: float | None = None,
    ) -> None:
        """An attempt started or ended. Idempotent (retries, replays): a start is recorded once,
        an end sets the end time once; an end without a start records nothing."""
        with self.engine.begin() as conn:
            u = t.usage.c
            if event == "started":
                if conn.execute(
                    select(u.attempt).where(u.workflow_id == workflow_id, u.attempt == attempt)
                ).first():
                    return
                owner = self.find(conn, workflow_id)
                if owner is None:
                    return  # not admitted through the ledger (a workflow from before admission)
                conn.execute(
                    insert(t.usage).values(
                        workflow_id=workflow_id, attempt=attempt, subject=owner["subject"],
                        team=owner["team"], gpus=gpus, price_per_gpu_hour=price_per_gpu_hour,
                        started_at=at,
                    )
                )  # fmt: skip
            else:
                conn.execute(
                    update(t.usage)
                    .where(u.workflow_id == workflow_id, u.attempt == attempt, u.ended_at.is_(None))
                    .values(ended_at=at)
                )

    @staticmethod
    def usage(
        conn: Connection, team: str, since: datetime, now: datetime, subject: str | None = None
    ) -> Usage:
        """GPU-hours run in [since, now) by a team (or one user in it), open attempts up to now."""
        u = t.usage.c
        query = select(u.gpus, u.price_per_gpu_hour, u.started_at, u.ended_at).where(
            u.team == team, u.started_at < now, or_(u.ended_at.is_(None), u.ended_at > since)
        )
        if subject is not None:
            query = query.where(u.subject == subject)
        gpu_hours = open_cost = 0.0
        for gpus, price, started, ended in conn.execute(query):
            start = max(t.aware(started), since)  # type: ignore[type-var]
            end = min(t.aware(ended) or now, now)  # type: ignore[type-var]
            hours = max((end - start).total_seconds(), 0.0) / 3600 * gpus
            gpu_hours += hours
            if ended is None and price:
                open_cost += hours * price
        return Usage(round(gpu_hours, 6), round(open_cost, 6))

    def summary(self, team: str, now: datetime) -> dict[str, object]:
        """A team's month so far, per user: held jobs and GPU-hours (admin API, fair share)."""
        since = month_start(now)
        with self.engine.connect() as conn:
            r = t.reservations.c
            rows = conn.execute(
                select(r.subject, func.count())
                .where(and_(r.team == team, r.decision == "admitted", r.released_at.is_(None)))
                .group_by(r.subject)
            ).all()
            users = {subject: {"held_jobs": int(n)} for subject, n in rows}
            subjects = {s for (s,) in conn.execute(select(t.usage.c.subject).where(t.usage.c.team == team))}
            for subject in subjects | set(users):
                use = self.usage(conn, team, since, now, subject)
                users.setdefault(subject, {"held_jobs": 0})["gpu_hours"] = use.gpu_hours  # type: ignore[assignment]
            team_use = self.usage(conn, team, since, now)
        return {
            "team": team,
            "month_start": since.isoformat(),
            "held_jobs": sum(int(v["held_jobs"]) for v in users.values()),
            "gpu_hours": team_use.gpu_hours,
            "open_cost_usd": team_use.open_cost_usd,
            "users": users,
        }
