"""The security tables' database: LoomDB's database (settings.loomdb.url), their own Alembic
migrations (loomos/security/migrations, version table loomos_security_alembic_version).

    engine = open_security_db(settings.loomdb.url)   # migrated, ready

One engine per process; it is thread-safe (a pool). Postgres in production, SQLite on the
embedded stack, as for LoomDB.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url

MIGRATIONS = Path(__file__).parent / "migrations"
# Two processes opening a fresh database at once: one migrates, the other waits (Postgres).
_MIGRATION_LOCK = 7410002


class SecurityDBError(RuntimeError):
    pass


def database_url(url: str) -> str:
    """LoomDB's URL in SQLAlchemy's spelling (postgres:// and postgresql:// use psycopg 3)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith(("sqlite:///", "postgresql+psycopg://")):
        raise SecurityDBError(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://...")
    return url


def alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    """Upgrade every branch to its head, one process at a time."""
    with engine.connect() as conn, conn.begin():  # SQLite: BEGIN IMMEDIATE, a write lock at once
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        command.upgrade(alembic_config(conn), "heads")


def open_security_db(url: str, *, pool_size: int = 5) -> Engine:
    """An engine on the database at `url`, migrated to the newest security schema."""
    url = database_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        db = make_url(url).database
        if not db or db == ":memory:":
            raise SecurityDBError("the security tables need a SQLite file, not :memory:")
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # Concurrent readers with one writer, as LoomDB's own connections to this file use.
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA foreign_keys=ON")
            # Let SQLAlchemy's transactions begin explicitly (pysqlite's own BEGIN handling off).
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    else:
        engine = create_engine(url, pool_size=pool_size, max_overflow=20)
    migrate(engine)
    return engine
