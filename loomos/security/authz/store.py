"""The policy in the database: a whole version of it read at once, the first version seeded from
the policy files, and every change made in one transaction with the version counter.

Casbin's rules go in and out through the maintained SQLAlchemy adapter (`sqlalchemy_adapter`).
For a change the adapter is bound to the change's own connection, so the rule rows, the roles
table and the version counter commit (or roll back) together: a process that sees the new
version also sees the rows, and a failed change leaves nothing behind.

Writers are serialised: on Postgres by locking the version row (`FOR UPDATE`), on SQLite by
the write lock `BEGIN IMMEDIATE` takes (loomos.security.db sets it for every transaction).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy_adapter import Adapter

from loomos.security.authz import tables as t
from loomos.security.authz.engine import PolicyView, enforcer_for
from loomos.security.authz.policy_files import PolicyFiles, RoleDefinition
from loomos.security.authz.settings import Constraints


def _now() -> datetime:
    return datetime.now(UTC)


def _rule_filter(ptype: str, values: Sequence[str]) -> Any:
    clauses = [t.CasbinRule.ptype == ptype]
    clauses += [getattr(t.CasbinRule, f"v{i}") == v for i, v in enumerate(values)]
    return and_(*clauses)


class PolicyChange:
    """One transaction's worth of policy edits (see PolicyStore.change)."""

    def __init__(self, conn: Connection, actor: str | None) -> None:
        self.conn = conn
        self.actor = actor
        self.adapter = Adapter(conn, db_class=t.CasbinRule, create_table=False)

    def has_rule(self, ptype: str, values: Sequence[str]) -> bool:
        query = select(t.CasbinRule.id).where(_rule_filter(ptype, values)).limit(1)
        return self.conn.execute(query).first() is not None

    def add_rule(self, ptype: str, values: Sequence[str]) -> bool:
        """Add the rule unless it is there; whether it was added."""
        if self.has_rule(ptype, values):
            return False
        self.adapter.add_policy(ptype, ptype, list(values))
        return True

    def remove_rule(self, ptype: str, values: Sequence[str]) -> bool:
        return bool(self.adapter.remove_policy(ptype, ptype, list(values)))

    def remove_rules(self, ptype: str, field_index: int, *values: str) -> None:
        self.adapter.remove_filtered_policy(ptype, ptype, field_index, *values)

    def rules(self, ptype: str, field_index: int, value: str) -> list[tuple[str, ...]]:
        column = getattr(t.CasbinRule, f"v{field_index}")
        rows = self.conn.execute(select(t.CasbinRule).where(t.CasbinRule.ptype == ptype, column == value))
        out = []
        for row in rows.mappings():
            out.append(tuple(row[f"v{i}"] for i in range(6) if row[f"v{i}"] is not None))
        return out

    def role_exists(self, name: str) -> bool:
        return self.conn.execute(select(t.roles.c.name).where(t.roles.c.name == name)).first() is not None

    def put_role(self, role: RoleDefinition, builtin: bool = False) -> None:
        values = {
            "description": role.description,
            "constraints": role.constraints.model_dump(exclude_none=True),
            "updated_at": _now(),
            "updated_by": self.actor,
        }
        if self.role_exists(role.name):
            self.conn.execute(update(t.roles).where(t.roles.c.name == role.name).values(**values))
        else:
            self.conn.execute(insert(t.roles).values(name=role.name, builtin=builtin, **values))

    def delete_role(self, name: str) -> None:
        self.conn.execute(delete(t.roles).where(t.roles.c.name == name))

    def record_revocation(self, subject: str, team: str, role: str) -> None:
        self.conn.execute(
            insert(t.revocations).values(
                subject=subject, team=team, role=role, revoked_at=_now(), revoked_by=self.actor
            )
        )

    def forget_revocation(self, subject: str, team: str, role: str) -> None:
        """A fresh grant: the role counts again, also where an identity carries it."""
        rv = t.revocations.c
        self.conn.execute(
            delete(t.revocations).where(
                rv.subject == subject, ((rv.team == team) & (rv.role == role)) | (rv.role == "*")
            )
        )


class PolicyStore:
    def __init__(self, engine: Engine, model_text: str) -> None:
        self.engine = engine
        self.model_text = model_text

    def version(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(t.policy_version.c.version).where(t.policy_version.c.id == 1)
                ).scalar_one()
            )

    def load(self) -> PolicyView:
        """The policy as committed now. The version is read first: a change committed while
        the rows are read shows up as a newer version at the next poll, never as a missed one."""
        version = self.version()
        adapter = Adapter(self.engine, db_class=t.CasbinRule, create_table=False)
        enforcer = enforcer_for(self.model_text, adapter=adapter)
        with self.engine.connect() as conn:
            role_rows = conn.execute(select(t.roles)).mappings().all()
            revoked = conn.execute(
                select(t.revocations.c.subject, t.revocations.c.team, t.revocations.c.role)
            ).all()
        roles = {
            r["name"]: RoleDefinition(
                r["name"], r["description"], Constraints.model_validate(r["constraints"] or {})
            )
            for r in role_rows
        }
        return PolicyView.build(version, enforcer, roles, [tuple(r) for r in revoked])

    @contextlib.contextmanager
    def change(self, actor: str | None) -> Iterator[PolicyChange]:
        """A transaction that edits the policy and moves its version on (if nothing raises)."""
        with self.engine.begin() as conn:
            lock = select(t.policy_version.c.version).where(t.policy_version.c.id == 1)
            if conn.dialect.name == "postgresql":
                lock = lock.with_for_update()
            conn.execute(lock)
            yield PolicyChange(conn, actor)
            conn.execute(
                update(t.policy_version)
                .where(t.policy_version.c.id == 1)
                .values(version=t.policy_version.c.version + 1, updated_at=_now())
            )

    def seed(self, files: PolicyFiles) -> bool:
        """Write the policy files' roles and rules into a database that has no policy yet (in
        one transaction; a second process starting at once waits, then finds it seeded)."""
        with self.change("seed") as change:
            seeded = change.conn.execute(
                select(t.policy_version.c.seeded_at).where(t.policy_version.c.id == 1)
            ).scalar_one()
            if seeded is not None:
                # Nothing changed; undo the version bump by raising past the transaction.
                raise _AlreadySeeded
            for role in files.roles.values():
                change.put_role(role, builtin=True)
            for rule in files.rules:
                change.add_rule(rule[0], rule[1:])
            change.conn.execute(
                update(t.policy_version)
                .where(t.policy_version.c.id == 1)
                .values(seeded_at=_now(), seed_source=files.source[:500])
            )
        return True

    def seeded(self) -> bool:
        with self.engine.connect() as conn:
            query = select(t.policy_version.c.seeded_at).where(t.policy_version.c.id == 1)
            return conn.execute(query).scalar_one() is not None

    def seed_if_empty(self, files: PolicyFiles) -> bool:
        if self.seeded():  # the usual case: no write lock at every start
            return False
        try:
            return self.seed(files)
        except _AlreadySeeded:
            return False


class _AlreadySeeded(Exception):
    pass
