"""Authentication fixtures: the security tables on SQLite and on Postgres (a schema per test,
as tests/loomdb does), a real LoomDB for the audit trail, a cheap argon2 (the production
parameters cost ~50 ms a hash), and a clock tests can move."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import psycopg
import pytest
from argon2 import PasswordHasher
from sqlalchemy.engine import Engine

from loomos.loomdb import EventQuery, EventStore, open_event_store
from loomos.security.authn.audit import AuditWriter, RequestContext
from loomos.security.authn.authenticator import Authenticator
from loomos.security.authn.passwords import Passwords
from loomos.security.authn.settings import AuthnSettings
from loomos.security.db import open_security_db

SCHEMA_PREFIX = f"authn_test_{os.getpid()}"
_ids = itertools.count()
PASSWORD = "correct horse battery staple"
CTX = RequestContext(source_ip="203.0.113.7", user_agent="pytest/authn", request_id="req-1")


def cheap_passwords() -> Passwords:
    return Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


class ManualClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def pg_admin(postgres_url: str) -> Iterator[psycopg.Connection]:
    conn = psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True)
    yield conn
    for (name,) in conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [SCHEMA_PREFIX + "%"]
    ).fetchall():
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/loomdb.sqlite"
        return
    postgres_url = request.getfixturevalue("postgres_url")
    admin = request.getfixturevalue("pg_admin")
    schema = f"{SCHEMA_PREFIX}_{next(_ids)}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options={quote(f'-csearch_path={schema}')}"
    admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/loomdb.sqlite"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = open_security_db(db_url)
    yield e
    e.dispose()


@pytest.fixture
def event_store(db_url: str) -> Iterator[EventStore]:
    store = open_event_store(db_url)
    yield store
    store.close()


@pytest.fixture
def make_authn(
    engine: Engine, event_store: EventStore, clock: ManualClock
) -> Iterator[Callable[..., Authenticator]]:
    made: list[Authenticator] = []

    def make(settings: AuthnSettings | None = None, **kw: object) -> Authenticator:
        authn = Authenticator(
            settings or AuthnSettings(),
            engine,
            audit=AuditWriter(event_store, interval_s=0.01),
            passwords=cheap_passwords(),
            clock=clock,
            **kw,  # type: ignore[arg-type]
        )
        made.append(authn)
        return authn

    yield make
    for authn in made:
        authn.close()


@pytest.fixture
def authn(make_authn: Callable[..., Authenticator]) -> Authenticator:
    return make_authn()


def audited(authn: Authenticator, store: EventStore, event_type: str) -> list[dict]:
    """The `event_type` events written so far (after the writer's batch went out)."""
    assert authn.audit.flush(5)
    page = store.query(EventQuery(event_types=[event_type], limit=1000))
    return [e.model_dump(mode="json") for e in page.events]
