"""LoomDB events through the API: query, follow (for Server-Sent Events), append custom events,
and the compliance report.

Errors: InvalidInput for a malformed query, filter, cursor or position; Conflict for an
expected-version mismatch; Unprocessable for an event that fails its schema (with every
violation).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from loomos.api.errors import Conflict, InvalidInput, Unprocessable
from loomos.loomdb import (
    ConcurrencyError,
    EventQuery,
    EventStore,
    InvalidEvent,
    LoomDBError,
    NewEvent,
    QueryError,
)
from loomos.loomdb.analytics import compliance_report, report_csv
from loomos.models.api import AppendRequest, AppendResponse, EventPage

# Written only by LoomOS itself (the audit activity, retention); the API refuses them so a
# client cannot forge a job's lifecycle or a retention record.
RESERVED_PREFIXES = ("job.", "worker.", "cost.", "compliance.retention.")


def event_query(store: EventStore, **fields: Any) -> EventQuery:
    """An EventQuery from request values, compiled now: bad paths and cursors fail before any I/O."""
    try:
        q = EventQuery(**fields)
        store.check_query(q)
    except ValidationError as exc:
        raise InvalidInput("; ".join(_message(e) for e in exc.errors())) from None
    except QueryError as exc:
        raise InvalidInput(str(exc)) from None
    return q


def _message(err: Any) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    text = str(err.get("msg", "")).removeprefix("Value error, ")
    return f"{loc}: {text}" if loc else text


def query_events(store: EventStore, q: EventQuery) -> EventPage:
    try:
        page = store.query(q)
    except QueryError as exc:
        raise InvalidInput(str(exc)) from None
    return EventPage(events=[e.model_dump(mode="json") for e in page.events], next_cursor=page.next_cursor)


def resume_position(from_position: int | None, last_event_id: str | None) -> int:
    """Where a stream starts: after Last-Event-ID when a reconnecting client sends one."""
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit():
            raise InvalidInput(f"Last-Event-ID must be an event position (an integer), got {last_event_id!r}")
        return int(last_event_id.strip())
    return from_position or 0


async def follow_events(
    store: EventStore, q: EventQuery, position: int, disconnected: Any
) -> AsyncIterator[dict[str, Any]]:
    """Server-Sent Events: catch-up, then live. Each SSE id is the event's position, so a client
    that reconnects with Last-Event-ID resumes right after the last event it received.
    `disconnected` is an async callable telling whether the client went away."""
    subscription = store.subscribe(q, position)
    try:
        async for batch in subscription:
            for e in batch.events:
                yield {"id": str(e.position), "event": e.event_type, "data": e.model_dump_json()}
            if await disconnected():
                break
    finally:
        await subscription.aclose()


async def append_event(store: EventStore, body: AppendRequest) -> AppendResponse:
    if body.event_type.startswith(RESERVED_PREFIXES):
        raise InvalidInput(
            f"event type {body.event_type!r} is reserved for LoomOS itself "
            f"(reserved prefixes: {', '.join(RESERVED_PREFIXES)})"
        )
    if body.expected_version is not None and body.expected_version < 0:
        raise InvalidInput("expected_version must be 0 (no stream yet) or a positive version")
    event = NewEvent.model_validate(body.model_dump(exclude={"expected_version"}))
    try:
        position = await asyncio.to_thread(store.append, event, body.expected_version)
    except InvalidEvent as exc:
        raise Unprocessable(str(exc), {"message": str(exc), "violations": exc.violations}) from None
    except ConcurrencyError as exc:
        raise Conflict(str(exc)) from None
    except LoomDBError as exc:
        raise InvalidInput(str(exc)) from None
    return AppendResponse(position=position, event_id=str(event.event_id))


async def compliance(store: EventStore, start: datetime, end: datetime, fmt: str) -> dict[str, Any] | str:
    """The access audit for [start, end): JSON, or CSV text when fmt is "csv"."""
    try:
        report = await asyncio.to_thread(compliance_report, store, start, end)
    except QueryError as exc:
        raise InvalidInput(str(exc)) from None
    return report_csv(report) if fmt == "csv" else report
