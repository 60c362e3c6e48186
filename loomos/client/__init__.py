"""The LoomOS Python SDK: a thin, typed client of the LoomCtl REST API.

    from loomos.client import LoomOSClient
    with LoomOSClient() as loom:
        job_id = loom.submit("examples/ddp-demo.yaml").job_id
        final = loom.wait(job_id)

`LoomOSClient` is synchronous, `AsyncLoomOSClient` the asyncio twin. Both describe each call
as a `_Call` (method, path, parameters, how to parse the answer) built by the shared
`_Calls` mixin, so the two only differ in how they send it. The response models come from
loomos.models.api, which the API declares too, so server and SDK cannot drift apart silently.

Credentials: `token=` if given, else $LOOMOS_API_TOKEN, else what `loomos login` stored for
this endpoint (loomos.security.authn.credentials), sent as `Authorization: Bearer ...`. A 401
becomes "not logged in (loomos login)" or "session expired"; a stored OIDC login is renewed
once with its refresh token first. A 403 passes the server's reason through.
"""

from __future__ import annotations

from loomos.client.aio import AsyncLoomOSClient
from loomos.client.base import default_endpoint
from loomos.client.calls import spec_payload
from loomos.client.config import API_PREFIX, DEFAULT_TIMEOUT_S, ENDPOINT_ENV, TOKEN_ENV
from loomos.client.errors import JobWaitTimeout, LoomOSError, error_message
from loomos.client.sync import LoomOSClient
from loomos.models.api import (
    CancelResponse,
    Health,
    JobDetail,
    JobList,
    JobSummary,
    SubmitResponse,
    TemporalHealth,
)

# The SDK's public names, response models included (they live in loomos.models.api).
__all__ = [
    "API_PREFIX",
    "DEFAULT_TIMEOUT_S",
    "ENDPOINT_ENV",
    "TOKEN_ENV",
    "AsyncLoomOSClient",
    "CancelResponse",
    "Health",
    "JobDetail",
    "JobList",
    "JobSummary",
    "JobWaitTimeout",
    "LoomOSClient",
    "LoomOSError",
    "SubmitResponse",
    "TemporalHealth",
    "default_endpoint",
    "error_message",
    "spec_payload",
]
