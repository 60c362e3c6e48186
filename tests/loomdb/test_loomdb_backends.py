"""The Backend protocol: both backends provide every member EventStore and the modules around it
call, with the protocol's signatures; and EventStore.check_query compiles without I/O."""

from __future__ import annotations

import inspect

import pytest

from loomos.loomdb import EventQuery, QueryError
from loomos.loomdb.backend import Backend
from loomos.loomdb.backend_postgres import PostgresBackend
from loomos.loomdb.backend_sqlite import SqliteBackend
from loomos.loomdb.query import QueryDialect

MEMBERS = sorted(
    {
        name
        for proto in (Backend, QueryDialect)
        for name in (*vars(proto), *getattr(proto, "__annotations__", {}))
        if not name.startswith("_")
    }
)


@pytest.fixture(params=["sqlite", "postgres"])
def backend_instance(request, tmp_path):
    """A backend object, never connected (engines connect lazily)."""
    if request.param == "sqlite":
        b = SqliteBackend(f"sqlite:///{tmp_path}/never.sqlite")
    else:
        b = PostgresBackend("postgresql+psycopg://nobody@127.0.0.1:1/never")
    yield b
    b.engine.dispose()


@pytest.mark.parametrize("name", MEMBERS)
def test_backends_provide_the_protocol(backend_instance, name):
    assert hasattr(backend_instance, name), name
    wanted = vars(Backend).get(name) or vars(QueryDialect).get(name)
    if inspect.isfunction(wanted):
        got = getattr(type(backend_instance), name)
        assert list(inspect.signature(got).parameters) == list(inspect.signature(wanted).parameters), name


def test_check_query_compiles_without_io(store, monkeypatch):
    def no_io(*_a, **_k):
        raise AssertionError("check_query must not touch the database")

    monkeypatch.setattr(store.backend, "read", no_io)
    monkeypatch.setattr(store.backend, "fetch_page", no_io)
    store.check_query(EventQuery(event_types=["data.*"], filters=["data.hardware_config.gpu_count >= 4"]))
    with pytest.raises(QueryError, match="unknown path"):
        store.check_query(EventQuery(filters=["nonsense.path = 1"]))
    with pytest.raises(QueryError, match="cursor"):
        store.check_query(EventQuery(cursor="not-a-cursor"))
    with pytest.raises(QueryError, match="contains"):
        store.check_query(EventQuery(filters=["tags >= 3"]))
