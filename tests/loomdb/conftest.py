"""LoomDB fixtures: every test gets a fresh store on each backend. Postgres tests use a schema
of their own (`loomdb_test_<pid>_<n>`, dropped afterwards) so parallel runs never collide."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import psycopg
import pytest

from loomos.loomdb import EventStore, open_event_store

SCHEMA_PREFIX = f"loomdb_test_{os.getpid()}"
_ids = itertools.count()


def _admin(postgres_url: str) -> psycopg.Connection:
    return psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True)


@pytest.fixture(scope="session")
def pg_admin(postgres_url: str) -> Iterator[psycopg.Connection]:
    conn = _admin(postgres_url)
    yield conn
    # Whatever a failed test left behind.
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [SCHEMA_PREFIX + "%"]
    ).fetchall()
    for (name,) in rows:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    conn.close()


@pytest.fixture
def pg_schema_url(postgres_url: str, pg_admin: psycopg.Connection) -> Iterator[str]:
    schema = f"{SCHEMA_PREFIX}_{next(_ids)}"
    pg_admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options={quote(f'-csearch_path={schema}')}"
    pg_admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/loomdb.sqlite"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def backend(store_url: str) -> str:
    return "sqlite" if store_url.startswith("sqlite") else "postgres"


class ManualClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 1, 10, 12, 0, tzinfo=UTC))


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    s = open_event_store(store_url)
    yield s
    s.close()


@pytest.fixture
def clocked_store(store_url: str, clock: ManualClock) -> Iterator[EventStore]:
    s = open_event_store(store_url, clock=clock)
    yield s
    s.close()


@pytest.fixture
def raw_sql(store_url: str) -> Callable[[str, tuple], list]:
    """Run SQL behind LoomDB's back (an attacker with database access), triggers bypassed."""

    def run(sql: str, params: tuple = ()) -> list:
        if store_url.startswith("sqlite"):
            import sqlite3

            conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
            try:
                conn.execute("DROP TRIGGER IF EXISTS loomdb_events_no_update")
                conn.execute("DROP TRIGGER IF EXISTS loomdb_events_no_delete")
                cur = conn.execute(sql, params)
                rows = cur.fetchall()
                conn.commit()
                return rows
            finally:
                conn.close()
        conn = psycopg.connect(store_url.replace("+psycopg", ""), autocommit=True)
        try:
            conn.execute("SET session_replication_role = replica")  # superuser: triggers off
            cur = conn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    return run
