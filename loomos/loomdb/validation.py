"""What an event must pass before it is appended: the event model (`coerce_event`, for events
given as dicts) and its type's newest registered schema (`validate_events`). Both raise
InvalidEvent listing every problem, so a caller can fix them all at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from loomos.loomdb.errors import InvalidEvent
from loomos.loomdb.schemas import RegisteredSchema, SchemaRegistry
from loomos.models.events import NewEvent


def coerce_event(e: NewEvent | dict[str, Any], index: int = 0, total: int = 1) -> NewEvent:
    """`e` as a NewEvent; `index` and `total` place it in its batch in the error's messages."""
    if isinstance(e, NewEvent):
        return e
    try:
        return NewEvent.model_validate(e)
    except ValidationError as exc:
        where = f"events[{index}]." if total > 1 else ""
        problems = [f"{where}{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in exc.errors()]
        etype = e.get("event_type", "?") if isinstance(e, dict) else "?"
        raise InvalidEvent(str(etype), problems) from None


def coerce_events(events: Sequence[NewEvent | dict[str, Any]]) -> list[NewEvent]:
    if all(isinstance(e, NewEvent) for e in events):
        return list(events)  # type: ignore[arg-type]
    return [coerce_event(e, i, len(events)) for i, e in enumerate(events)]


def validate_events(registry: SchemaRegistry, items: list[NewEvent]) -> list[str | None]:
    """Each event's data against the newest schema registered for its type: the schema version
    each one validated against (None: its type has no schema, and it is accepted as is)."""
    versions: list[str | None] = []
    problems: list[str] = []
    first_bad: InvalidEvent | None = None
    latest: dict[str, RegisteredSchema | None] = {}  # per type, looked up once per append
    for i, e in enumerate(items):
        t = e.event_type
        entry = latest[t] if t in latest else latest.setdefault(t, registry.latest(t))
        if entry is None:
            versions.append(None)
            continue
        try:
            versions.append(entry.validate(e.data))
        except InvalidEvent as exc:
            first_bad = first_bad or exc
            prefix = f"events[{i}] ({e.event_type}) " if len(items) > 1 else ""
            problems.extend(prefix + v for v in exc.violations)
            versions.append(None)
    if first_bad is not None:
        raise InvalidEvent(first_bad.event_type, problems, first_bad.schema_version)
    return versions
