"""Alembic migrations: a store opens (and migrates) a fresh database, the downgrade removes
everything it created, and upgrading again gives a working store."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from loomos.loomdb import NewEvent, open_event_store
from loomos.loomdb.store import MIGRATIONS

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


def _tables(store) -> set[str]:
    with store.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_upgrade_downgrade_upgrade(store_url, backend):
    store = open_event_store(store_url)
    assert TABLES <= _tables(store)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM loomdb_alembic_version")).scalar() == "0001"
    store.append(NewEvent(event_type="custom.x", stream_id="s"))
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
