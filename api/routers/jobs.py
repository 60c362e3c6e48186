"""Jobs: submit, list, inspect, cancel, read logs.

A job is the workflow `job-<job_id>` (JobWorkflow). Listing reads Temporal visibility (the
search attributes JobWorkflow keeps current), so it costs one call however many jobs there
are; inspecting one job asks its workflow (the `status` query) and merges the live
heartbeat of its running training activity, which is fresher than the workflow's own view.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, HTTPException, Path, Query, Request
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.service import RPCError, RPCStatusCode

from loomos.api.deps import SettingsDep, TemporalDep, workflow_ui_url
from loomos.api.workflow_calls import (
    DEFAULT_QUERY_TIMEOUT,
    QueryTimedOut,
    WorkflowGone,
    no_worker,
    query_workflow,
)
from loomos.client import CancelResponse, JobDetail, JobList, JobSummary, SubmitResponse
from loomos.models.jobs import JobResult, JobState, JobStatus, JobWorkflowInput
from loomos.models.spec import JobSpec
from loomos.models.training import LogsRequest, LogsResult, TrainingProgress
from loomos.settings import NodeSettings
from loomos.temporal import search_attributes as sa
from loomos.temporal.names import CONTROL_TASK_QUEUE, job_workflow_id

router = APIRouter(tags=["jobs"])
log = structlog.get_logger()

JOB_WORKFLOW_TYPE = "JobWorkflow"
LOGS_WORKFLOW_TYPE = "FetchLogsWorkflow"
TRAINING_ACTIVITY = "run_training"
# The log workflow waits up to 10 s for the node to pick the read up and 30 s for the read.
LOGS_EXECUTION_TIMEOUT = timedelta(seconds=45)
# When a finished job's workflow cannot be queried (no control worker to replay it), its
# status is rebuilt from history instead; a short wait is enough to find out.
CLOSED_QUERY_TIMEOUT = timedelta(seconds=3)

# Job ids are `<spec.name>-<8 hex>`; the pattern is a little wider (lower-case DNS-like) so
# ids derived by pipelines later fit, and narrow enough to be safe in ids and queries.
JOB_ID_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?$"


def _pattern(model: type, field: str) -> str:
    """The regex a settings/spec field is validated with, so filters accept exactly the same."""
    for meta in model.model_fields[field].metadata:  # type: ignore[attr-defined]
        pattern = getattr(meta, "pattern", None)
        if pattern:
            return pattern
    raise LookupError(f"{model.__name__}.{field} has no pattern")


USER_PATTERN = _pattern(JobSpec, "user")
TEAM_PATTERN = _pattern(JobSpec, "team")
POOL_PATTERN = _pattern(JobSpec, "pool")
NODE_ID_PATTERN = _pattern(NodeSettings, "node_id")

JobIdPath = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="as returned by POST /api/v1/jobs")]


def _query_timeout(request: Request) -> timedelta:
    return getattr(request.app.state, "query_timeout", DEFAULT_QUERY_TIMEOUT)


# --- submit ----------------------------------------------------------------------------------


@router.post(
    "/jobs",
    status_code=201,
    response_model=SubmitResponse,
    summary="Submit a job",
    responses={422: {"description": "the spec is invalid; `detail[].loc` names each bad field"}},
)
async def submit_job(spec: JobSpec, settings: SettingsDep, temporal: TemporalDep) -> SubmitResponse:
    client = await temporal.client()
    submitted_at = datetime.now(UTC)
    # 32 random bits: a clash is very unlikely, and REJECT_DUPLICATE makes one visible (never
    # two jobs behind one id), so try a fresh suffix then.
    for _ in range(3):
        job_id = f"{spec.name}-{secrets.token_hex(4)}"
        workflow_id = job_workflow_id(job_id)
        try:
            await client.start_workflow(
                JOB_WORKFLOW_TYPE,
                JobWorkflowInput(job_id=job_id, spec=spec, submitted_at=submitted_at),
                id=workflow_id,
                task_queue=CONTROL_TASK_QUEUE,
                search_attributes=sa.for_job(spec),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            continue
        except RPCError as err:
            if err.status == RPCStatusCode.INVALID_ARGUMENT and "search attribute" in err.message.lower():
                raise _missing_search_attributes(err) from err
            raise
        log.info("job submitted", job_id=job_id, user=spec.user, team=spec.team, pool=spec.pool)
        return SubmitResponse(
            job_id=job_id,
            workflow_id=workflow_id,
            status=JobState.SUBMITTED,
            ui_url=workflow_ui_url(settings, workflow_id),
        )
    raise HTTPException(500, "could not allocate a unique job id; try again")


def _missing_search_attributes(err: RPCError) -> HTTPException:
    names = ", ".join(f"{k}={v}" for k, v in sa.DEFINITIONS.items())
    return HTTPException(
        503,
        f"Temporal rejected LoomOS's search attributes ({err.message}); register them on the "
        f"namespace (`loomos dev` does; or `temporal operator search-attribute create` for {names})",
    )


# --- list ------------------------------------------------------------------------------------

# A job whose workflow ended without reaching its own final state (terminated by an operator,
# timed out, crashed) keeps a stale LoomJobStatus; its Temporal status decides instead.
_CLOSED_AS: dict[WorkflowExecutionStatus, JobState] = {
    WorkflowExecutionStatus.FAILED: JobState.FAILED,
    WorkflowExecutionStatus.TERMINATED: JobState.FAILED,
    WorkflowExecutionStatus.TIMED_OUT: JobState.FAILED,
    WorkflowExecutionStatus.CANCELED: JobState.CANCELLED,
}
_VISIBILITY_STATUS_NAME: dict[WorkflowExecutionStatus, str] = {
    WorkflowExecutionStatus.RUNNING: "Running",
    WorkflowExecutionStatus.COMPLETED: "Completed",
    WorkflowExecutionStatus.FAILED: "Failed",
    WorkflowExecutionStatus.CANCELED: "Canceled",
    WorkflowExecutionStatus.TERMINATED: "Terminated",
    WorkflowExecutionStatus.TIMED_OUT: "TimedOut",
}


def effective_state(recorded: str | None, execution: WorkflowExecutionStatus | None) -> JobState:
    try:
        state = JobState(recorded) if recorded else JobState.SUBMITTED
    except ValueError:
        state = JobState.SUBMITTED
    if execution is not None and execution != WorkflowExecutionStatus.RUNNING and not state.terminal:
        return _CLOSED_AS.get(execution, state)
    return state


def _quote(value: str) -> str:
    # Values reach here only after pattern validation; refuse anything that could end the
    # string literal anyway, so a future caller cannot turn this into query injection.
    if '"' in value or "\\" in value:
        raise ValueError(f"unsafe value in visibility query: {value!r}")
    return f'"{value}"'


def _state_clause(state: JobState) -> str:
    recorded = f"{sa.STATUS.name} = {_quote(state.value)}"
    if not state.terminal:
        return f"({recorded} AND ExecutionStatus = {_quote('Running')})"
    closed = [_VISIBILITY_STATUS_NAME[status] for status, as_state in _CLOSED_AS.items() if as_state == state]
    if not closed:
        return f"({recorded})"
    return f"({recorded} OR ExecutionStatus IN ({', '.join(_quote(c) for c in closed)}))"


def build_list_query(
    states: list[JobState] | None, user: str | None, team: str | None, pool: str | None
) -> str:
    """The visibility query for GET /jobs, from already validated values only."""
    clauses = [f"WorkflowType = {_quote(JOB_WORKFLOW_TYPE)}"]
    if states:
        clauses.append("(" + " OR ".join(_state_clause(s) for s in dict.fromkeys(states)) + ")")
    for key, value in ((sa.USER, user), (sa.TEAM, team), (sa.POOL, pool)):
        if value is not None:
            clauses.append(f"{key.name} = {_quote(value)}")
    return " AND ".join(clauses)


def summarize(execution: WorkflowExecution) -> JobSummary:
    attrs = execution.typed_search_attributes
    workflow_id = execution.id
    return JobSummary(
        job_id=workflow_id.removeprefix("job-"),
        workflow_id=workflow_id,
        state=effective_state(attrs.get(sa.STATUS), execution.status),
        user=attrs.get(sa.USER),
        team=attrs.get(sa.TEAM),
        pool=attrs.get(sa.POOL),
        gpu_type=attrs.get(sa.GPU_TYPE),
        gpu_count=attrs.get(sa.GPU_COUNT),
        priority=attrs.get(sa.PRIORITY),
        execution_status=execution.status.name if execution.status else None,
        started_at=execution.start_time,
        closed_at=execution.close_time,
    )


@router.get("/jobs", response_model=JobList, summary="List jobs (newest first)")
async def list_jobs(
    temporal: TemporalDep,
    status: Annotated[list[JobState] | None, Query(description="repeat for several states")] = None,
    user: Annotated[str | None, Query(pattern=USER_PATTERN)] = None,
    team: Annotated[str | None, Query(pattern=TEAM_PATTERN)] = None,
    pool: Annotated[str | None, Query(pattern=POOL_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    client = await temporal.client()
    query = build_list_query(status, user, team, pool)
    jobs: list[JobSummary] = []
    try:
        async for execution in client.list_workflows(query, limit=limit, page_size=min(limit, 1000)):
            jobs.append(summarize(execution))
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT and "search attribute" in err.message.lower():
            raise _missing_search_attributes(err) from err
        raise
    return JobList(jobs=jobs, count=len(jobs))


# --- one job ---------------------------------------------------------------------------------


async def _describe(client: Client, job_id: str) -> tuple[WorkflowHandle, WorkflowExecutionDescription]:
    handle = client.get_workflow_handle(job_workflow_id(job_id))
    try:
        desc = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(404, f"no job {job_id!r}") from err
        raise
    if desc.workflow_type != JOB_WORKFLOW_TYPE:
        raise HTTPException(404, f"no job {job_id!r}")
    return handle, desc


async def _status_from_history(
    client: Client, handle: WorkflowHandle, desc: WorkflowExecutionDescription
) -> JobStatus:
    """A finished job's status when no worker can answer its query: its start input plus how
    it closed (and its result, when it completed)."""
    start = None
    async for event in handle.fetch_history_events():
        start = event.workflow_execution_started_event_attributes
        break
    if start is None:
        raise HTTPException(502, f"workflow {handle.id} has no start event")
    (job,) = await client.data_converter.decode(start.input.payloads, [JobWorkflowInput])
    state = effective_state(desc.typed_search_attributes.get(sa.STATUS), desc.status)
    status = JobStatus(
        job_id=job.job_id,
        workflow_id=handle.id,
        name=job.spec.name,
        user=job.spec.user,
        team=job.spec.team,
        pool=job.spec.pool,
        state=state,
        attempt=0,
        max_attempts=job.spec.retry_policy.max_retries + 1,
        submitted_at=job.submitted_at,
        finished_at=desc.close_time,
    )
    if desc.status == WorkflowExecutionStatus.COMPLETED:
        result = await handle.result(result_type=JobResult)
        status.state = result.state
        status.attempt = result.attempts
        status.step = result.final_step
        status.metrics = result.metrics
        status.last_checkpoint = result.last_checkpoint
        status.resumed_from_step = result.resumed_from_step
        status.error = result.error
    elif desc.status is not None:
        status.error = f"workflow {desc.status.name.lower()}"
    return status


async def _job_status(
    request: Request, client: Client, job_id: str
) -> tuple[JobStatus, WorkflowExecutionDescription]:
    handle, desc = await _describe(client, job_id)
    running = desc.status == WorkflowExecutionStatus.RUNNING
    timeout = _query_timeout(request) if running else min(_query_timeout(request), CLOSED_QUERY_TIMEOUT)
    try:
        status = await query_workflow(handle, "status", JobStatus, timeout)
    except QueryTimedOut as err:
        if running:
            raise no_worker(f"job {job_id}'s workflow", timeout) from err
        status = await _status_from_history(client, handle, desc)
    except WorkflowGone as err:
        if running:
            raise HTTPException(404, f"no job {job_id!r}") from err
        status = await _status_from_history(client, handle, desc)
    # The workflow's own state is authoritative unless it was closed from outside (terminated,
    # timed out): then say so, since the workflow never recorded why it stopped.
    closed_as = effective_state(status.state.value, desc.status)
    if closed_as != status.state:
        status.state = closed_as
        status.finished_at = status.finished_at or desc.close_time
        if desc.status is not None:
            status.error = status.error or f"workflow {desc.status.name.lower()}"
    return status, desc


async def _live_progress(
    client: Client, desc: WorkflowExecutionDescription, attempt: int
) -> tuple[TrainingProgress, datetime | None] | None:
    """The freshest heartbeat of this attempt's training activities (one per node)."""
    best: tuple[TrainingProgress, datetime | None] | None = None
    for pending in desc.raw_description.pending_activities:
        if pending.activity_type.name != TRAINING_ACTIVITY or not pending.heartbeat_details.payloads:
            continue
        try:
            (progress,) = await client.data_converter.decode(
                list(pending.heartbeat_details.payloads)[:1], [TrainingProgress]
            )
        except Exception as err:  # a heartbeat from another version must not break GET
            log.warning("undecodable heartbeat", workflow_id=desc.id, error=str(err))
            continue
        if not isinstance(progress, TrainingProgress) or progress.attempt != attempt:
            continue
        beat_at = (
            pending.last_heartbeat_time.ToDatetime(tzinfo=UTC)
            if pending.HasField("last_heartbeat_time")
            else None
        )
        if best is None or (progress.step or -1) > (best[0].step or -1):
            best = (progress, progress.updated_at or beat_at)
    return best


def merge_progress(status: JobStatus, progress: TrainingProgress) -> None:
    """Fold a running attempt's heartbeat into the workflow's status (heartbeats are newer)."""
    if progress.step is not None and (status.step is None or progress.step >= status.step):
        status.step = progress.step
    if progress.total_steps is not None:
        status.total_steps = progress.total_steps
    if progress.metrics:
        status.metrics = {**status.metrics, **progress.metrics}
    if progress.resumed_from_step is not None:
        status.resumed_from_step = progress.resumed_from_step
    ckpt = progress.last_checkpoint
    if ckpt is not None and (status.last_checkpoint is None or ckpt.step >= status.last_checkpoint.step):
        status.last_checkpoint = ckpt


@router.get(
    "/jobs/{job_id}",
    response_model=JobDetail,
    summary="A job's status, with live training progress while it runs",
    responses={404: {"description": "no such job"}, 503: {"description": "Temporal or worker unreachable"}},
)
async def get_job(
    job_id: JobIdPath, request: Request, settings: SettingsDep, temporal: TemporalDep
) -> JobDetail:
    client = await temporal.client()
    status, desc = await _job_status(request, client, job_id)
    updated_at = None
    if status.state == JobState.RUNNING:
        live = await _live_progress(client, desc, status.attempt)
        if live is not None:
            merge_progress(status, live[0])
            updated_at = live[1]
    return JobDetail(
        **status.model_dump(),
        ui_url=workflow_ui_url(settings, status.workflow_id),
        progress_updated_at=updated_at,
    )


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    response_model=CancelResponse,
    summary="Cancel a job: it checkpoints, stops, and ends CANCELLED",
    responses={404: {"description": "no such job"}, 409: {"description": "the job already finished"}},
)
async def cancel_job(job_id: JobIdPath, temporal: TemporalDep) -> CancelResponse:
    client = await temporal.client()
    handle, desc = await _describe(client, job_id)
    state = effective_state(desc.typed_search_attributes.get(sa.STATUS), desc.status)
    # A job reaches its final state a moment before its workflow closes (it still records the
    # outcome); either means there is nothing left to cancel.
    if desc.status != WorkflowExecutionStatus.RUNNING or state.terminal:
        raise HTTPException(409, f"job {job_id} already finished ({state.value}); nothing to cancel")
    try:
        await handle.cancel()
    except RPCError as err:
        # Finished between describe and cancel.
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise HTTPException(409, f"job {job_id} already finished; nothing to cancel") from err
        raise
    log.info("job cancel requested", job_id=job_id, state=state.value)
    return CancelResponse(job_id=job_id, workflow_id=handle.id, state=state, cancel_requested=True)


# --- logs ------------------------------------------------------------------------------------


@router.get(
    "/jobs/{job_id}/logs",
    response_model=LogsResult,
    summary="The tail of one attempt's training log, read from the node that ran it",
    responses={
        404: {"description": "no such job, attempt, node or log"},
        503: {"description": "the node (or the control worker) did not answer"},
    },
)
async def job_logs(
    job_id: JobIdPath,
    request: Request,
    temporal: TemporalDep,
    attempt: Annotated[int | None, Query(ge=1, description="default: the latest attempt")] = None,
    node: Annotated[
        str | None, Query(pattern=NODE_ID_PATTERN, description="default: the attempt's first node")
    ] = None,
    tail_bytes: Annotated[int, Query(ge=1, le=1024 * 1024)] = 64 * 1024,
) -> LogsResult:
    client = await temporal.client()
    status, _ = await _job_status(request, client, job_id)
    ran = [a for a in status.attempts if a.nodes]
    if not ran:
        raise HTTPException(
            404, f"job {job_id} has not run an attempt on a node yet (state {status.state.value})"
        )
    if attempt is None:
        summary = ran[-1]
    else:
        found = [a for a in ran if a.attempt == attempt]
        if not found:
            known = ", ".join(str(a.attempt) for a in ran)
            raise HTTPException(
                404, f"job {job_id} has no attempt {attempt} that ran on a node (attempts: {known})"
            )
        summary = found[0]
    if node is None:
        node = summary.nodes[0]
    elif node not in summary.nodes:
        raise HTTPException(
            404, f"attempt {summary.attempt} of job {job_id} ran on {', '.join(summary.nodes)}, not on {node}"
        )
    logs_request = LogsRequest(job_id=job_id, attempt=summary.attempt, node_id=node, tail_bytes=tail_bytes)
    try:
        return await client.execute_workflow(
            LOGS_WORKFLOW_TYPE,
            logs_request,
            id=f"logs-{job_id}-{summary.attempt}-{node}-{uuid.uuid4().hex}",
            task_queue=CONTROL_TASK_QUEUE,
            result_type=LogsResult,
            execution_timeout=LOGS_EXECUTION_TIMEOUT,
        )
    except WorkflowFailureError as err:
        raise _logs_failure(err, job_id, summary.attempt, node) from err


def _logs_failure(err: WorkflowFailureError, job_id: str, attempt: int, node: str) -> HTTPException:
    cause: Any = err.cause
    while cause is not None and not isinstance(cause, ApplicationError | TemporalTimeoutError):
        cause = getattr(cause, "cause", None)
    if isinstance(cause, ApplicationError):
        if cause.type == "LogNotFound":
            return HTTPException(404, cause.message)
        if cause.type == "NodeUnreachable":
            return HTTPException(503, cause.message)
        return HTTPException(
            502, f"reading the log of job {job_id} attempt {attempt} on {node} failed: {cause}"
        )
    if isinstance(cause, TemporalTimeoutError):
        return no_worker("the log fetch", LOGS_EXECUTION_TIMEOUT)
    return HTTPException(
        502, f"reading the log of job {job_id} attempt {attempt} on {node} failed: {err.cause}"
    )
