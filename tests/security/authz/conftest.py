"""Authorization fixtures: the policy and ledger tables on SQLite and on Postgres (a schema per
test, as tests/security/authn does), authorizers opened on them, and identities."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from urllib.parse import quote

import psycopg
import pytest

from loomos.models.identity import AuthMethod, Identity
from loomos.security.authz.authorizer import Authorizer, open_authorizer
from loomos.settings import Settings

SCHEMA_PREFIX = f"authz_test_{os.getpid()}"
_ids = itertools.count()


def identity(
    subject: str, team: str = "vision", roles: dict[str, list[str]] | None = None, **kw: object
) -> Identity:
    return Identity(
        subject=subject,
        team=team,
        roles=roles or {},
        auth_method=kw.pop("auth_method", AuthMethod.LOCAL),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


ROOT = identity("root", "default", {"*": ["platform_admin"]})


@pytest.fixture(scope="session")
def pg_admin(postgres_url: str) -> Iterator[psycopg.Connection]:
    conn = psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True)
    yield conn
    for (name,) in conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [SCHEMA_PREFIX + "%"]
    ).fetchall():
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    conn.close()


def _pg_schema_url(request: pytest.FixtureRequest) -> Iterator[str]:
    postgres_url = request.getfixturevalue("postgres_url")
    admin = request.getfixturevalue("pg_admin")
    schema = f"{SCHEMA_PREFIX}_{next(_ids)}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options={quote(f'-csearch_path={schema}')}"
    admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/loomdb.sqlite"
        return
    yield from _pg_schema_url(request)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/loomdb.sqlite"


def settings_for(url: str, **authz: object) -> Settings:
    return Settings.model_validate({"loomdb": {"url": url}, "security": {"authz": authz}})


@pytest.fixture
def make_authorizer() -> Iterator[Callable[..., Authorizer]]:
    made: list[Authorizer] = []

    def make(url: str, *, watch: bool = False, **authz: object) -> Authorizer:
        authorizer = open_authorizer(settings_for(url, **authz), watch=watch)
        made.append(authorizer)
        return authorizer

    yield make
    for authorizer in made:
        authorizer.close()
        authorizer.engine.dispose()


@pytest.fixture
def authorizer(make_authorizer: Callable[..., Authorizer], sqlite_url: str) -> Authorizer:
    return make_authorizer(sqlite_url)
