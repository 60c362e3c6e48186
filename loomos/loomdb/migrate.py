"""The Alembic migrations of LoomDB's schema (migrations/), run when a store is opened: each
backend calls `upgrade` inside whatever makes it one process at a time (backend_*.migrate)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection) -> Config:
    """An Alembic configuration that runs the migrations on `connection`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection: Connection) -> None:
    """Migrate to the newest revision, in the caller's transaction."""
    command.upgrade(alembic_config(connection), "head")
