"""FastAPI dependencies shared by the routers: settings, the (lazily connected) Temporal
client, the LoomDB event store, and the deadline for workflow queries.

Everything lives on `app.state` (set by create_app), so tests and embedding applications can
put their own there: `settings`, `temporal_connection`, `loomdb`, `query_timeout`.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request

from loomos.api.errors import ServiceUnavailable
from loomos.api.services.temporal import DEFAULT_QUERY_TIMEOUT, TemporalConnection
from loomos.loomdb import EventStore, open_event_store
from loomos.settings import Settings

_open_lock = threading.Lock()


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_temporal(request: Request) -> TemporalConnection:
    return request.app.state.temporal_connection


def get_query_timeout(request: Request) -> timedelta:
    return getattr(request.app.state, "query_timeout", DEFAULT_QUERY_TIMEOUT)


def get_event_store(request: Request) -> EventStore:
    """The app's LoomDB, opened from settings.loomdb.url on first use and kept on app.state."""
    store = getattr(request.app.state, "loomdb", None)
    if store is not None:
        return store
    with _open_lock:
        store = getattr(request.app.state, "loomdb", None)
        if store is None:
            url = request.app.state.settings.loomdb.url
            try:
                store = open_event_store(url)
            except Exception as exc:  # unreachable Postgres, unwritable file: say which
                raise ServiceUnavailable(f"LoomDB at {url.split('@')[-1]} is unavailable: {exc}") from None
            request.app.state.loomdb = store
    return store


SettingsDep = Annotated[Settings, Depends(get_settings)]
TemporalDep = Annotated[TemporalConnection, Depends(get_temporal)]
QueryTimeoutDep = Annotated[timedelta, Depends(get_query_timeout)]
StoreDep = Annotated[EventStore, Depends(get_event_store)]
