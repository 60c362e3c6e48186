"""Alembic migrations: a store opens (and migrates) a fresh database, the downgrade removes
everything it created, and upgrading again gives a working store."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from loomos.loomdb import NewEvent, open_event_store
from loomos.loomdb.migrate import MIGRATIONS

TABLES = {
    "loomdb_events",
    "loomdb_head",
    "loomdb_streams",
    "loomdb_schemas",
    "loomdb_consumers",
    "loomdb_archives",
}


def _alembic(store, action: str, target: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, target)


def _head() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def _tables(store) -> set[str]:
    with store.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def _event_id_index(store) -> str:
    """The access method of the event_id index on the partitioned table and on each partition."""
    with store.engine.connect() as conn:
        methods = conn.execute(
            text(
                "SELECT DISTINCT am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_am am ON am.oid = c.relam JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = i.indkey[0] WHERE a.attname = 'event_id' "
                "AND c.relnamespace = current_schema()::regnamespace"
            )
        ).scalars()
        found = sorted(methods)
    assert len(found) == 1, found
    return found[0]


def test_upgrade_downgrade_upgrade(store_url, backend):
    store = open_event_store(store_url)
    assert TABLES <= _tables(store)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM loomdb_alembic_version")).scalar() == _head()
    store.append(NewEvent(event_type="custom.x", stream_id="s"))
    if backend == "postgres":
        assert _event_id_index(store) == "hash"  # the parent and the partitions the append made
        _alembic(store, "downgrade", "0001")
        assert _event_id_index(store) == "btree"
        _alembic(store, "upgrade", "head")
        assert _event_id_index(store) == "hash"
    _alembic(store, "downgrade", "base")
    left = {t for t in _tables(store) if t.startswith("loomdb_") and t != "loomdb_alembic_version"}
    assert left == set()
    if backend == "postgres":
        with store.engine.connect() as conn:
            functions = conn.execute(
                text(
                    "SELECT proname FROM pg_proc WHERE proname LIKE 'loomdb_%' "
                    "AND pronamespace = current_schema()::regnamespace"
                )
            ).all()
        assert functions == []
    store.close()
    again = open_event_store(store_url)  # migrates up again
    try:
        assert again.head()[0] == 0
        assert again.append(NewEvent(event_type="custom.x", stream_id="s")) == 1
        assert again.verify().ok
    finally:
        again.close()
