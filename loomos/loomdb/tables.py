"""SQLModel tables around the event table: the chain head, streams, schemas, named consumers and
archive manifests. The event table itself is created by the migration with backend-specific DDL
(time partitions, immutability triggers) and written through the backends' fast paths.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column
from sqlmodel import Field, SQLModel

EVENTS_TABLE = "loomdb_events"


class ChainHead(SQLModel, table=True):
    """One row: the last position and hash. Writers lock it, which serialises appends so that
    positions become visible in order (no gaps for readers) and each event can hash its
    predecessor."""

    __tablename__ = "loomdb_head"
    id: int = Field(default=1, primary_key=True)
    position: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str
    recorded_at: datetime


class StreamVersion(SQLModel, table=True):
    __tablename__ = "loomdb_streams"
    stream_id: str = Field(primary_key=True)
    version: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_position: int = Field(sa_column=Column(BigInteger, nullable=False))


class EventSchema(SQLModel, table=True):
    __tablename__ = "loomdb_schemas"
    event_type: str = Field(primary_key=True)
    version: str = Field(primary_key=True)
    definition: dict = Field(sa_column=Column("schema", JSON, nullable=False))  # the JSON Schema
    registered_at: datetime


class Consumer(SQLModel, table=True):
    """A named subscriber's acknowledged position: a restarted consumer resumes right after it."""

    __tablename__ = "loomdb_consumers"
    name: str = Field(primary_key=True)
    position: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime


class ArchiveManifest(SQLModel, table=True):
    """One archived (and dropped) period: where it went and how it links into the chain."""

    __tablename__ = "loomdb_archives"
    id: int | None = Field(default=None, primary_key=True)
    period: str = Field(index=True, unique=True)
    first_position: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_position: int = Field(sa_column=Column(BigInteger, nullable=False))
    first_prev_hash: str
    last_hash: str
    event_count: int
    uri: str
    sha256: str
    period_start: datetime
    period_end: datetime
    archived_at: datetime
    expires_at: datetime
    purged_at: datetime | None = None  # the archive object was deleted (retention.purge_expired)


# loomdb_archives's columns as EventStore.archives() and retention read them, in this order.
ARCHIVE_COLUMNS = (
    "period",
    "first_position",
    "last_position",
    "first_prev_hash",
    "last_hash",
    "event_count",
    "uri",
    "sha256",
    "period_start",
    "period_end",
    "archived_at",
    "expires_at",
    "purged_at",
)
