"""LoomDB: the tamper-evident, gap-safe event store behind LoomOS's audit trail.

    store = open_event_store(settings.loomdb.url)   # sqlite:////abs/path or postgresql://...
    store.append(NewEvent(event_type="data.accessed", stream_id="dataset-7", data={...}))
    page = store.query(EventQuery(event_types=["model.*"], filters=["data.hardware_config.gpu_count >= 4"]))
    async for batch in store.subscribe(consumer="billing"): ...; store.ack("billing", batch.position)
    report = store.verify()

How it stays right:
- Ordering (no gaps, no skips): writers are serialised on the chain-head row (Postgres
  `SELECT ... FOR UPDATE`, SQLite `BEGIN IMMEDIATE`), so a position is only handed out after
  every lower position has committed; a reader following `position > last seen` cannot miss a
  late commit. Concurrent appends in one process share a transaction (group commit), so the
  lock costs one fsync per group, not per event.
- Idempotency: event_id is the key; a retried append returns the original positions.
- Optimistic concurrency: `expected_version` per stream (0 = must not exist yet).
- Tamper evidence: each event stores SHA-256 over its canonical form, which includes its
  position and its predecessor's hash; `verify()` names the first altered, inserted or deleted
  event and checks the end of the chain against the head row. The form is versioned per event
  (`hash_version`): new events hash RFC 8785 (JCS) JSON, so any JCS implementation can check
  them (hashchain.py documents the hashed array); older events keep their version 1 form.
- Immutability: no update/delete API; triggers refuse UPDATE/DELETE/TRUNCATE (deletes only
  inside a retention window). Retention (retention.py) archives whole months to JSON Lines
  (gzip, file:// or s3://) and drops them; manifests keep the chain verifiable across them.
- Schema: Alembic migrations in migrations/, run when a store is opened.
- Layout: store.py (EventStore) talks to a database only through the Backend protocol
  (backend.py; backend_sqlite.py, backend_postgres.py); group_commit.py queues and plans
  appends, verify.py walks the chain, retention.py and archives.py move old months out.
"""

from loomos.loomdb.errors import (
    ConcurrencyError,
    InvalidEvent,
    LoomDBError,
    QueryError,
    RetentionError,
    SchemaError,
)
from loomos.loomdb.query import EventQuery, Filter
from loomos.loomdb.store import EventStore, QueryPage, SubscriptionBatch, open_event_store
from loomos.models.events import AuditContext, Event, NewEvent, Priority, SecurityContext

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
