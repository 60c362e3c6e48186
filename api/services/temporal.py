"""LoomCtl's connection to Temporal, and calls to workflows with a hard deadline.

The Temporal client is connected on first use rather than at start-up, so LoomCtl starts and
answers /healthz while Temporal is still coming up (or down), and recovers by itself once
Temporal is reachable. Handlers ask for it after FastAPI has validated the request
(`await temporal.client()`): bad input is a 422 even while Temporal is down.

A query is answered by a worker replaying the workflow; with no worker polling, Temporal holds
the query until its deadline. `query_workflow` turns that into QueryTimedOut, which services
report as a 503 naming the missing process instead of hanging the HTTP request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError, RPCStatusCode

from loomos.api.errors import ServiceUnavailable, UpstreamFailed
from loomos.settings import Settings
from loomos.temporal.client import connect_temporal

T = TypeVar("T")

# gRPC codes that mean "the server is not there (right now)", as opposed to a bad request.
UNREACHABLE_CODES = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED})
CONNECT_TIMEOUT_S = 10.0
DEFAULT_QUERY_TIMEOUT = timedelta(seconds=10)


class TemporalUnavailable(ServiceUnavailable):
    """Temporal could not be reached; the app answers 503 with this message."""


class QueryTimedOut(Exception):
    pass


class WorkflowGone(Exception):
    """The workflow does not exist (or closed without ever running, so cannot be queried)."""


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
                client = await self._connect()
                await self._check_namespace(client)
                self._client = client
                if self._state is not None:
                    self._state.temporal = client
            return self._client

    async def _connect(self) -> Client:
        try:
            # A black-holed address would otherwise wait for the OS's TCP timeout (minutes).
            return await asyncio.wait_for(connect_temporal(self.settings), CONNECT_TIMEOUT_S)
        except TimeoutError as err:
            raise self.unreachable(f"no answer within {CONNECT_TIMEOUT_S:g}s") from err
        except RPCError as err:
            raise self.unreachable(err.message) from err
        except RuntimeError as err:
            # The SDK reports refused connections as RuntimeError("Failed client connect: ...").
            raise self.unreachable(_short(str(err))) from err

    async def _check_namespace(self, client: Client) -> None:
        # Without this, a mistyped namespace makes every job look unknown (404) instead of
        # pointing at the configuration. The client's own namespace and address: a Temporal
        # client profile (envconfig) may have supplied them rather than LoomOS's settings.
        namespace, address = client.namespace, client.service_client.config.target_host
        try:
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=namespace), timeout=timedelta(seconds=CONNECT_TIMEOUT_S)
            )
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise TemporalUnavailable(
                    f"namespace {namespace!r} does not exist on Temporal at {address}: create it "
                    "(`temporal operator namespace create`) or fix temporal.namespace / $TEMPORAL_NAMESPACE"
                ) from err
            raise self.unreachable(err.message) from err


def _short(text: str) -> str:
    # "Failed client connect: Server connection error: tonic::transport::Error(...)" is long and
    # mostly Rust internals; keep the first two clauses and the OS-level reason if there is one.
    short = ": ".join(text.split(": ")[:2])
    for reason in ("Connection refused", "timed out", "No route to host", "Name or service not known"):
        if reason.lower() in text.lower():
            return f"{short} ({reason.lower()})"
    return short


async def query_workflow(
    handle: WorkflowHandle[Any, Any], query: Callable[[Any], T], timeout: timedelta
) -> T:
    """Run the workflow's query (a method reference such as JobWorkflow.get_status); raise
    QueryTimedOut when no worker answers within `timeout`, WorkflowGone when there is nothing
    to query."""
    seconds = timeout.total_seconds()
    try:
        # The rpc deadline alone is not a hard bound (the SDK retries some outcomes), hence
        # the outer wait_for.
        return await asyncio.wait_for(handle.query(query, rpc_timeout=timeout), seconds + 1)
    except TimeoutError as err:
        raise QueryTimedOut() from err
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise WorkflowGone(err.message) from err
        if err.status == RPCStatusCode.FAILED_PRECONDITION:
            # "Workflow execution closed before WorkflowTaskStarted event": it never ran.
            raise WorkflowGone(err.message) from err
        if err.status == RPCStatusCode.DEADLINE_EXCEEDED or (
            err.status == RPCStatusCode.CANCELLED and "timeout" in err.message.lower()
        ):
            raise QueryTimedOut() from err
        raise
    except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
        raise UpstreamFailed(f"workflow {handle.id} could not answer its query: {err}") from err


def no_worker(what: str, timeout: timedelta) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"{what} did not answer within {timeout.total_seconds():g}s: "
        "is a control worker (`loomos worker control`) running?"
    )


def workflow_ui_url(settings: Settings, workflow_id: str) -> str:
    return f"{settings.ui_url}/namespaces/{settings.temporal.namespace}/workflows/{workflow_id}"
