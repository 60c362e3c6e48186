"""LoomDB events: query, stream (Server-Sent Events), append custom events.

Reading and following events is security:audit: the trail holds every user's actions. Appending
is security:admin: the trail is evidence (security.*, cost.recorded that cost limits count,
job.*), so writing into it is an administrator's act, not a team member's.

The store is the app's (loomos.api.deps.get_event_store). Errors answer `{"detail": ...}`:
400 for a malformed query, filter, cursor or position; 409 for an expected-version conflict;
422 for an event that fails its schema (detail lists every violation).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request
from sse_starlette.sse import EventSourceResponse

from loomos.api.deps import StoreDep
from loomos.api.permissions import requires
from loomos.api.services import events
from loomos.models.api import AppendRequest, AppendResponse, EventPage
from loomos.models.permissions import Permission

router = APIRouter(prefix="/events", tags=["events"])

EventTypes = Annotated[list[str], Query(description="exact type or prefix like data.*")]
Filters = Annotated[list[str], Query(description="PATH OP VALUE, e.g. data.gpu_count >= 4")]


@router.get(
    "", response_model=EventPage, summary="Query LoomDB events (paged)", **requires(Permission.SECURITY_AUDIT)
)
def list_events(
    store: StoreDep,
    event_type: EventTypes = [],  # noqa: B006
    stream_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    time_field: Literal["recorded_at", "occurred_at"] = "recorded_at",
    filter: Filters = [],  # noqa: B006
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    after_position: Annotated[int | None, Query(ge=0)] = None,
) -> EventPage:
    q = events.event_query(
        store,
        event_types=event_type,
        stream_id=stream_id,
        start=start,
        end=end,
        time_field=time_field,
        filters=filter,
        order=order,
        limit=limit,
        cursor=cursor,
        after_position=after_position,
    )
    return events.query_events(store, q)


@router.get(
    "/stream",
    summary="Follow LoomDB events as Server-Sent Events (resumable)",
    **requires(Permission.SECURITY_AUDIT),
)
async def stream_events(
    request: Request,
    store: StoreDep,
    event_type: EventTypes = [],  # noqa: B006
    stream_id: str | None = None,
    filter: Filters = [],  # noqa: B006
    from_position: Annotated[
        int | None, Query(ge=0, description="exclusive; default: from the start")
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    q = events.event_query(store, event_types=event_type, stream_id=stream_id, filters=filter)
    position = events.resume_position(from_position, last_event_id)
    return EventSourceResponse(events.follow_events(store, q, position, request.is_disconnected), ping=15)


@router.post(
    "",
    status_code=201,
    response_model=AppendResponse,
    summary="Append a custom event",
    **requires(Permission.SECURITY_ADMIN),
)
async def append_event(body: AppendRequest, store: StoreDep) -> AppendResponse:
    return await events.append_event(store, body)
