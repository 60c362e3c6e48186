"""The caller's identity in Temporal headers, from LoomCtl to the activities a job runs.

A JobSpec is what a user writes; who they are must not be something they can write. So LoomCtl
puts the identity it authenticated into the `loomos-identity` header of the workflow it starts,
the job workflow passes that header on to every activity (and child workflow) it starts, and
an activity that needs it (admission) reads it from there:

    # LoomCtl
    client = with_identity_header(client)
    with acting_as(identity):
        await client.start_workflow(...)

    # workers: Worker(..., interceptors=[IdentityInterceptor()])
    # an activity
    identity = current_identity()      # None: the workflow was started without one

The header is the identity as JSON (pydantic), independent of the data converter; a header
that does not parse counts as no identity (admission then refuses the job). Payload
encryption, when on, covers headers through the client's header codec behaviour.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import temporalio.client
import temporalio.worker
from temporalio.api.common.v1 import Payload

from loomos.models.identity import Identity

HEADER = "loomos-identity"
_ENCODING = b"json/plain"
_MESSAGE_TYPE = b"loomos.Identity"

_outgoing: ContextVar[Identity | None] = ContextVar("loomos_outgoing_identity", default=None)
_incoming: ContextVar[Identity | None] = ContextVar("loomos_activity_identity", default=None)


def encode(identity: Identity) -> Payload:
    return Payload(
        metadata={"encoding": _ENCODING, "messageType": _MESSAGE_TYPE},
        data=identity.model_dump_json().encode(),
    )


def decode(payload: Payload | None) -> Identity | None:
    if payload is None or payload.metadata.get("messageType") != _MESSAGE_TYPE:
        return None
    try:
        return Identity.model_validate_json(payload.data)
    except ValueError:
        return None


def identity_of(headers: Mapping[str, Payload]) -> Identity | None:
    return decode(headers.get(HEADER))


@contextlib.contextmanager
def acting_as(identity: Identity) -> Iterator[None]:
    """Workflows started through an intercepted client inside this block carry `identity`."""
    token = _outgoing.set(identity)
    try:
        yield
    finally:
        _outgoing.reset(token)


def current_identity() -> Identity | None:
    """Inside an activity: the identity its workflow was started with (None: none came)."""
    return _incoming.get()


# --- client side ---------------------------------------------------------------------------------


class _ClientOutbound(temporalio.client.OutboundInterceptor):
    async def start_workflow(self, input: temporalio.client.StartWorkflowInput) -> Any:
        identity = _outgoing.get()
        if identity is not None:
            input.headers = {**input.headers, HEADER: encode(identity)}
        return await super().start_workflow(input)


# --- worker side ---------------------------------------------------------------------------------


class _WorkflowOutbound(temporalio.worker.WorkflowOutboundInterceptor):
    def __init__(
        self, next: temporalio.worker.WorkflowOutboundInterceptor, inbound: _WorkflowInbound
    ) -> None:
        super().__init__(next)
        self.inbound = inbound

    def _with(self, headers: Mapping[str, Payload]) -> Mapping[str, Payload]:
        header = self.inbound.header
        return headers if header is None else {**headers, HEADER: header}

    def start_activity(self, input: temporalio.worker.StartActivityInput) -> Any:
        input.headers = self._with(input.headers)
        return super().start_activity(input)

    def start_local_activity(self, input: temporalio.worker.StartLocalActivityInput) -> Any:
        input.headers = self._with(input.headers)
        return super().start_local_activity(input)

    async def start_child_workflow(self, input: temporalio.worker.StartChildWorkflowInput) -> Any:
        input.headers = self._with(input.headers)
        return await super().start_child_workflow(input)

    def continue_as_new(self, input: temporalio.worker.ContinueAsNewInput) -> Any:
        input.headers = self._with(input.headers)
        return super().continue_as_new(input)


class _WorkflowInbound(temporalio.worker.WorkflowInboundInterceptor):
    """Keeps the header the workflow was started with (as it came: it is passed on, not read)."""

    header: Payload | None = None

    def init(self, outbound: temporalio.worker.WorkflowOutboundInterceptor) -> None:
        super().init(_WorkflowOutbound(outbound, self))

    async def execute_workflow(self, input: temporalio.worker.ExecuteWorkflowInput) -> Any:
        self.header = input.headers.get(HEADER)
        return await super().execute_workflow(input)


class _ActivityInbound(temporalio.worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        token = _incoming.set(identity_of(input.headers))
        try:
            return await super().execute_activity(input)
        finally:
            _incoming.reset(token)


class IdentityInterceptor(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """Client side: adds the `acting_as` identity to started workflows. Worker side: passes a
    workflow's identity header on to what it starts, and exposes it to activities."""

    def intercept_client(
        self, next: temporalio.client.OutboundInterceptor
    ) -> temporalio.client.OutboundInterceptor:
        return _ClientOutbound(next)

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        return _ActivityInbound(next)

    def workflow_interceptor_class(
        self, input: temporalio.worker.WorkflowInterceptorClassInput
    ) -> type[temporalio.worker.WorkflowInboundInterceptor]:
        return _WorkflowInbound


_intercepted: weakref.WeakKeyDictionary[temporalio.client.Client, temporalio.client.Client] = (
    weakref.WeakKeyDictionary()
)


def with_identity_header(client: temporalio.client.Client) -> temporalio.client.Client:
    """`client`, or a client on the same connection that also runs IdentityInterceptor."""
    config = client.config()
    if any(isinstance(i, IdentityInterceptor) for i in config["interceptors"]):
        return client
    found = _intercepted.get(client)
    if found is None:
        config["interceptors"] = [*config["interceptors"], IdentityInterceptor()]
        found = _intercepted[client] = temporalio.client.Client(**config)
    return found
