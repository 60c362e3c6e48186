"""Talking to workflows from request handlers: queries with a hard deadline, history reads.

A query is answered by a worker replaying the workflow; with no worker polling, Temporal
holds the query until its deadline. The routers turn that into a 503 that names the missing
process instead of hanging the HTTP request.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TypeVar

from fastapi import HTTPException
from temporalio.client import WorkflowHandle, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError, RPCStatusCode

T = TypeVar("T")

DEFAULT_QUERY_TIMEOUT = timedelta(seconds=10)


class QueryTimedOut(Exception):
    pass


class WorkflowGone(Exception):
    """The workflow does not exist (or closed without ever running, so cannot be queried)."""


async def query_workflow(handle: WorkflowHandle, name: str, result_type: type[T], timeout: timedelta) -> T:
    """Run query `name`; raise QueryTimedOut when no worker answers within `timeout`."""
    seconds = timeout.total_seconds()
    try:
        # The rpc deadline alone is not a hard bound (the SDK retries some outcomes), hence
        # the outer wait_for.
        return await asyncio.wait_for(
            handle.query(name, result_type=result_type, rpc_timeout=timeout), seconds + 1
        )
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
        raise HTTPException(502, f"workflow {handle.id} could not answer query {name!r}: {err}") from err


def no_worker(what: str, timeout: timedelta) -> HTTPException:
    return HTTPException(
        503,
        f"{what} did not answer within {timeout.total_seconds():g}s: "
        "is a control worker (`loomos worker control`) running?",
    )
