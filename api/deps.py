"""Dependencies shared by the routers: settings and the (lazily connected) Temporal client.

The Temporal client is connected on first use rather than at start-up, so LoomCtl starts and
answers /healthz while Temporal is still coming up (or down), and recovers by itself once
Temporal is reachable. Routers ask for it inside their handlers (`await temporal.client()`),
after FastAPI has validated the request: bad input is a 422 even while Temporal is down.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, Request
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from loomos.config import Settings
from loomos.temporal_client import connect_temporal


class TemporalUnavailable(Exception):
    """Temporal could not be reached; the app answers 503 with this message."""


# gRPC codes that mean "the server is not there (right now)", as opposed to a bad request.
UNREACHABLE_CODES = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED})


class TemporalConnection:
    """Holds one Temporal client per app; connects it on first use, under a lock.

    Lives at `app.state.temporal_connection`; once connected, the client is also published as
    `app.state.temporal` for code that only wants a Client (None until the first connection).
    """

    def __init__(self, settings: Settings, client: Client | None = None, state: Any = None):
        self.settings = settings
        self._client = client
        self._state = state
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> Client | None:
        return self._client

    def unreachable(self, reason: object) -> TemporalUnavailable:
        t = self.settings.temporal
        return TemporalUnavailable(
            f"Temporal is not reachable at {t.address} (namespace {t.namespace}): {reason}. "
            "Is the Temporal server running (`loomos dev`)?"
        )

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await connect_temporal(self.settings)
                except RPCError as err:
                    raise self.unreachable(err.message) from err
                except RuntimeError as err:
                    # The SDK reports refused connections and bad namespaces as RuntimeError.
                    raise self.unreachable(_short(str(err))) from err
                if self._state is not None:
                    self._state.temporal = self._client
            return self._client


def _short(text: str) -> str:
    # "Failed client connect: Server connection error: tonic::transport::Error(...)" is long and
    # mostly Rust internals; keep the first two clauses and the OS-level reason if there is one.
    short = ": ".join(text.split(": ")[:2])
    for reason in ("Connection refused", "timed out", "No route to host", "Name or service not known"):
        if reason.lower() in text.lower():
            return f"{short} ({reason.lower()})"
    return short


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_temporal(request: Request) -> TemporalConnection:
    return request.app.state.temporal_connection


async def get_temporal_client(request: Request) -> Client:
    """For routes that need Temporal for everything they do; unreachable -> 503.

    Note it runs before body validation errors are reported; routes that validate input
    should take TemporalDep and connect in the handler instead.
    """
    return await get_temporal(request).client()


SettingsDep = Annotated[Settings, Depends(get_settings)]
TemporalDep = Annotated[TemporalConnection, Depends(get_temporal)]
TemporalClientDep = Annotated[Client, Depends(get_temporal_client)]


def workflow_ui_url(settings: Settings, workflow_id: str) -> str:
    return f"{settings.ui_url}/namespaces/{settings.temporal.namespace}/workflows/{workflow_id}"
