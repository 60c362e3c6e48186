"""LoomDB: the tamper-evident, gap-safe event store behind LoomOS's audit trail."""

from loomos.loomdb.errors import (
    ConcurrencyError,
    InvalidEvent,
    LoomDBError,
    QueryError,
    RetentionError,
    SchemaError,
)
from loomos.loomdb.events import AuditContext, Event, NewEvent, Priority, SecurityContext
from loomos.loomdb.query import EventQuery, Filter
from loomos.loomdb.store import EventStore, QueryPage, SubscriptionBatch, open_event_store

__all__ = [
    "AuditContext",
    "ConcurrencyError",
    "Event",
    "EventQuery",
    "EventStore",
    "Filter",
    "InvalidEvent",
    "LoomDBError",
    "NewEvent",
    "Priority",
    "QueryError",
    "QueryPage",
    "RetentionError",
    "SchemaError",
    "SecurityContext",
    "SubscriptionBatch",
    "open_event_store",
]
