"""FetchLogsWorkflow: read an attempt's training log from the node that ran it.

Logs stay on the node that wrote them; the API may run on another machine, so it asks
through Temporal: this short workflow runs `read_training_log` on that node's task queue.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from loomos.models.training import LogsRequest, LogsResult
    from loomos.temporal import names
    from loomos.temporal.activities import NodeActivities

NODE_PICKUP_TIMEOUT = timedelta(seconds=10)


@workflow.defn(name=names.FETCH_LOGS_WORKFLOW)
class FetchLogsWorkflow:
    @workflow.run
    async def run(self, request: LogsRequest) -> LogsResult:
        try:
            return await workflow.execute_activity_method(
                NodeActivities.read_training_log,
                request,
                task_queue=names.node_task_queue(request.node_id),
                schedule_to_start_timeout=NODE_PICKUP_TIMEOUT,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as err:
            if isinstance(err.cause, TimeoutError):
                raise ApplicationError(
                    f"node {request.node_id} did not answer within {NODE_PICKUP_TIMEOUT.seconds}s "
                    "(its node worker is not running)",
                    type=names.ErrorType.NODE_UNREACHABLE,
                    non_retryable=True,
                ) from None
            if isinstance(err.cause, ApplicationError):
                raise ApplicationError(err.cause.message, type=err.cause.type, non_retryable=True) from None
            raise
