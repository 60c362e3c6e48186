"""Errors LoomDB raises. Each message names what was wrong so an operator can act on it."""

from __future__ import annotations


class LoomDBError(Exception):
    """Base class of every LoomDB error."""


class InvalidEvent(LoomDBError):
    """The event does not match its registered schema (or is malformed); lists every violation."""

    def __init__(self, event_type: str, violations: list[str], schema_version: str | None = None):
        self.event_type = event_type
        self.violations = violations
        self.schema_version = schema_version
        where = f" (schema {schema_version})" if schema_version else ""
        super().__init__(f"event {event_type!r} is invalid{where}: " + "; ".join(violations))


class ConcurrencyError(LoomDBError):
    """Optimistic concurrency: the stream is not at the version the writer expected."""

    def __init__(self, stream_id: str, expected: int, actual: int):
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"stream {stream_id!r}: expected version {expected}, but it is at version {actual}")


class SchemaError(LoomDBError):
    """A schema could not be registered (bad JSON Schema, bad version, version already taken)."""


class QueryError(LoomDBError):
    """A query, filter, cursor or path was malformed."""


class RetentionError(LoomDBError):
    """A retention policy is inconsistent or an archive could not be written or read."""


class StoredEventId(Exception):
    """Internal: an append planned without looking its ids up (group_commit.GroupCommit, on a
    backend whose event_id is UNIQUE) met an id that is stored already. Never reaches a caller:
    the append is rolled back and redone with the lookup."""
