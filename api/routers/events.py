"""LoomDB events: query, stream (Server-Sent Events), append custom events; compliance reports.

The store is opened lazily from `app.state.settings.loomdb.url` on first use and cached on
`app.state.loomdb` (tests put their own store there). Errors answer `{"detail": ...}`:
400 for a malformed query, filter, cursor or position; 409 for an expected-version conflict;
422 for an event that fails its schema (detail lists every violation).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ValidationError
from sse_starlette.sse import EventSourceResponse

from loomos.loomdb import (
    ConcurrencyError,
    EventQuery,
    EventStore,
    InvalidEvent,
    LoomDBError,
    NewEvent,
    QueryError,
    open_event_store,
)
from loomos.loomdb.analytics import compliance_report, report_csv
from loomos.loomdb.query import SqlBuilder

router = APIRouter(tags=["events"])
_open_lock = threading.Lock()

# Written only by LoomOS itself (the audit activity, retention); the API refuses them so a
# client cannot forge a job's lifecycle or a retention record.
RESERVED_PREFIXES = ("job.", "worker.", "cost.", "compliance.retention.")


def get_event_store(request: Request) -> EventStore:
    store = getattr(request.app.state, "loomdb", None)
    if store is not None:
        return store
    with _open_lock:
        store = getattr(request.app.state, "loomdb", None)
        if store is None:
            settings = getattr(request.app.state, "settings", None)
            if settings is None:
                from loomos.settings import load_settings

                settings = load_settings()
            try:
                store = open_event_store(settings.loomdb.url)
            except Exception as exc:  # unreachable Postgres, unwritable file: say which
                where = settings.loomdb.url.split("@")[-1]
                raise HTTPException(503, f"LoomDB at {where} is unavailable: {exc}") from None
            request.app.state.loomdb = store
    return store


StoreDep = Annotated[EventStore, Depends(get_event_store)]


def _event_query(
    store: EventStore,
    event_type: list[str],
    stream_id: str | None,
    start: datetime | None,
    end: datetime | None,
    time_field: str,
    filters: list[str],
    order: str,
    limit: int,
    cursor: str | None,
    after_position: int | None,
) -> EventQuery:
    try:
        q = EventQuery(
            event_types=event_type,
            stream_id=stream_id,
            start=start,
            end=end,
            time_field=time_field,
            filters=filters,
            order=order,
            limit=limit,
            cursor=cursor,
            after_position=after_position,
        )
        SqlBuilder(store.backend).query(q)  # compile now: bad paths and cursors fail before any I/O
    except ValidationError as exc:
        raise HTTPException(400, "; ".join(_msg(e) for e in exc.errors())) from None
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None
    return q


def _msg(err: Any) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    text = str(err.get("msg", "")).removeprefix("Value error, ")
    return f"{loc}: {text}" if loc else text


class EventPage(BaseModel):
    events: list[dict[str, Any]]
    next_cursor: str | None


@router.get("/events", response_model=EventPage)
def list_events(
    store: StoreDep,
    event_type: Annotated[list[str], Query(description="exact type or prefix like data.*")] = [],  # noqa: B006
    stream_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    time_field: Literal["recorded_at", "occurred_at"] = "recorded_at",
    filter: Annotated[list[str], Query(description="PATH OP VALUE, e.g. data.gpu_count >= 4")] = [],  # noqa: B006
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    after_position: Annotated[int | None, Query(ge=0)] = None,
) -> EventPage:
    q = _event_query(
        store, event_type, stream_id, start, end, time_field, filter, order, limit, cursor, after_position
    )
    try:
        page = store.query(q)
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None
    return EventPage(events=[e.model_dump(mode="json") for e in page.events], next_cursor=page.next_cursor)


@router.get("/events/stream")
async def stream_events(
    request: Request,
    store: StoreDep,
    event_type: Annotated[list[str], Query()] = [],  # noqa: B006
    stream_id: str | None = None,
    filter: Annotated[list[str], Query()] = [],  # noqa: B006
    from_position: Annotated[
        int | None, Query(ge=0, description="exclusive; default: from the start")
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Server-Sent Events: catch-up, then live. Each SSE id is the event's position, so a client
    that reconnects with Last-Event-ID resumes right after the last event it received."""
    q = _event_query(store, event_type, stream_id, None, None, "recorded_at", filter, "asc", 100, None, None)
    position = from_position or 0
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit():
            raise HTTPException(
                400, f"Last-Event-ID must be an event position (an integer), got {last_event_id!r}"
            )
        position = int(last_event_id.strip())

    async def events() -> AsyncIterator[dict[str, Any]]:
        subscription = store.subscribe(q, position)
        try:
            async for batch in subscription:
                for e in batch.events:
                    yield {"id": str(e.position), "event": e.event_type, "data": e.model_dump_json()}
                if await request.is_disconnected():
                    break
        finally:
            await subscription.aclose()

    return EventSourceResponse(events(), ping=15)


class AppendRequest(NewEvent):
    expected_version: int | None = None


class AppendResponse(BaseModel):
    position: int
    event_id: str


@router.post("/events", status_code=201, response_model=AppendResponse)
async def append_event(body: AppendRequest, store: StoreDep) -> AppendResponse:
    if body.event_type.startswith(RESERVED_PREFIXES):
        raise HTTPException(
            400,
            f"event type {body.event_type!r} is reserved for LoomOS itself "
            f"(reserved prefixes: {', '.join(RESERVED_PREFIXES)})",
        )
    if body.expected_version is not None and body.expected_version < 0:
        raise HTTPException(400, "expected_version must be 0 (no stream yet) or a positive version")
    event = NewEvent.model_validate(body.model_dump(exclude={"expected_version"}))
    try:
        position = await asyncio.to_thread(store.append, event, body.expected_version)
    except InvalidEvent as exc:
        raise HTTPException(422, {"message": str(exc), "violations": exc.violations}) from None
    except ConcurrencyError as exc:
        raise HTTPException(409, str(exc)) from None
    except LoomDBError as exc:
        raise HTTPException(400, str(exc)) from None
    return AppendResponse(position=position, event_id=str(event.event_id))


@router.get("/compliance/report", response_model=None)
async def get_compliance_report(
    store: StoreDep,
    start: datetime,
    end: datetime,
    format: Literal["json", "csv"] = "json",
) -> dict[str, Any] | PlainTextResponse:
    """Access audit for [start, end): who did what, denials, data access by classification."""
    try:
        report = await asyncio.to_thread(compliance_report, store, start, end)
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None
    if format == "csv":
        return PlainTextResponse(report_csv(report), media_type="text/csv")
    return report
