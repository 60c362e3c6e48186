"""The authn tables: migrated by loomos.security.db as the `authn` branch, on SQLite and
Postgres; what is stored of a secret (never the secret)."""

from __future__ import annotations

from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Engine

from loomos.security.authn import tables as t
from loomos.security.authn.authenticator import Authenticator
from loomos.security.db import open_security_db
from tests.security.authn.conftest import CTX, PASSWORD


def test_migration_creates_every_table(engine: Engine) -> None:
    names = set(inspect(engine).get_table_names())
    assert {table.name for table in t.ALL} <= names
    with engine.connect() as conn:
        heads = conn.execute(text("SELECT version_num FROM loomos_security_alembic_version")).scalars().all()
    assert "authn_0001" in heads


def test_tables_match_the_migration(engine: Engine) -> None:
    inspector = inspect(engine)
    for table in t.ALL:
        migrated = {c["name"] for c in inspector.get_columns(table.name)}
        assert migrated == set(table.columns.keys()), table.name


def test_opening_again_is_a_no_op(db_url: str, engine: Engine) -> None:
    again = open_security_db(db_url)
    assert set(inspect(again).get_table_names()) == set(inspect(engine).get_table_names())
    again.dispose()


def test_secrets_are_stored_hashed(authn: Authenticator, engine: Engine) -> None:
    user = authn.accounts.create_local("alice", PASSWORD)
    token, _ = authn.tokens.create(user.id, "ci", ["jobs:read"], 30)
    grant = authn.login("alice", PASSWORD, CTX)
    with engine.connect() as conn:
        dump = " ".join(
            str(row)
            for table in (t.users, t.api_tokens, t.sessions)
            for row in conn.execute(select(table)).all()
        )
    assert PASSWORD not in dump and token not in dump and grant.token not in dump  # type: ignore[union-attr]
    assert "$argon2id$" in dump
    assert token[:15] in dump  # the shown prefix, loomos_pat_abcd
