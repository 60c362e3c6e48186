"""Jobs: submit, list, read one, cancel, read an attempt's log.

A job is the workflow `job-<job_id>` (JobWorkflow). Listing reads Temporal visibility (the
search attributes JobWorkflow keeps current), so it costs one call however many jobs there
are; reading one job asks its workflow (the `status` query) and merges the live heartbeat of
its running training activity, which is fresher than the workflow's own view. A finished job
whose workflow no worker can replay is rebuilt from its history instead.

Who may see and change which job is loomos.api.services.job_access; the caller's identity goes
into the job workflow's Temporal headers (loomos.temporal.identity), where admission reads it.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
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

from loomos.api.errors import (
    Conflict,
    LoomCtlError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unprocessable,
    UpstreamFailed,
)
from loomos.api.services import job_access
from loomos.api.services.temporal import (
    QueryTimedOut,
    WorkflowGone,
    no_worker,
    query_workflow,
    workflow_ui_url,
)
from loomos.models.api import CancelResponse, JobDetail, JobList, JobSummary, SubmitResponse
from loomos.models.input_limits import MAX_SPEC_BYTES
from loomos.models.jobs import JobResult, JobState, JobStatus, JobWorkflowInput
from loomos.models.permissions import Permission
from loomos.models.spec import JobSpec
from loomos.models.training import LogsRequest, LogsResult, TrainingProgress
from loomos.security.authz.access import Authorized
from loomos.settings import Settings
from loomos.temporal import names
from loomos.temporal import search_attributes as sa
from loomos.temporal.identity import acting_as, with_identity_header
from loomos.workflows.job import JobWorkflow
from loomos.workflows.logs import FetchLogsWorkflow

log = structlog.get_logger()

# The log workflow waits up to 10 s for the node to pick the read up and 30 s for the read.
LOGS_EXECUTION_TIMEOUT = timedelta(seconds=45)
# When a finished job's workflow cannot be queried (no control worker to replay it), its
# status is rebuilt from history instead; a short wait is enough to find out.
CLOSED_QUERY_TIMEOUT = timedelta(seconds=3)


# --- submit ----------------------------------------------------------------------------------


async def submit_job(client: Client, settings: Settings, spec: JobSpec, caller: Authorized) -> SubmitResponse:
    """Start the job's workflow as the caller; its id is `<spec.name>-<8 random hex>`."""
    spec = job_access.as_caller(spec, caller)
    client = with_identity_header(client)
    size = len(spec.model_dump_json())
    if size > MAX_SPEC_BYTES:
        # Temporal would refuse the workflow's input (2 MB) or warn on every task (256 KB):
        # say so now, before anything is started.
        raise PayloadTooLarge(f"the spec is {size} bytes as JSON; at most {MAX_SPEC_BYTES}")
    submitted_at = datetime.now(UTC)
    # 32 random bits: a clash is very unlikely, and REJECT_DUPLICATE makes one visible (never
    # two jobs behind one id), so try a fresh suffix then.
    for _ in range(3):
        job_id = f"{spec.name}-{secrets.token_hex(4)}"
        workflow_id = names.job_workflow_id(job_id)
        try:
            with acting_as(caller.identity):
                await client.start_workflow(
                    JobWorkflow.run,
                    JobWorkflowInput(
                        job_id=job_id, spec=sealed(spec, job_id, settings), submitted_at=submitted_at
                    ),
                    id=workflow_id,
                    task_queue=names.CONTROL_TASK_QUEUE,
                    search_attributes=sa.for_job(spec),
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )
        except WorkflowAlreadyStartedError:
            continue
        except RPCError as err:
            if problem := _search_attributes_problem(err):
                raise problem from err
            raise
        log.info("job submitted", job_id=job_id, user=spec.user, team=spec.team, pool=spec.pool)
        return SubmitResponse(
            job_id=job_id,
            workflow_id=workflow_id,
            status=JobState.SUBMITTED,
            ui_url=workflow_ui_url(settings, workflow_id),
        )
    raise LoomCtlError("could not allocate a unique job id; try again")


def sealed(spec: JobSpec, job_id: str, settings: Settings) -> JobSpec:
    """The spec with its secret variables sealed for this job (loomos.security.crypto.sealed_values):
    what Temporal stores holds none of them in clear."""
    if not spec.secret_environment_variables:
        return spec
    from loomos.security.crypto.errors import CryptoError
    from loomos.security.crypto.keys import key_provider_from_settings
    from loomos.security.crypto.sealed_values import is_sealed, seal_all

    if any(is_sealed(v) for v in spec.secret_environment_variables.values()):
        raise Unprocessable("secret_environment_variables: give the values in clear; LoomCtl seals them")
    try:
        provider = key_provider_from_settings(settings.security.crypto)
        values = seal_all(spec.secret_environment_variables, job_id=job_id, provider=provider)
    except CryptoError as exc:
        raise Unprocessable(
            f"secret_environment_variables cannot be sealed here: {exc} (LoomCtl needs the keyring, "
            "security.crypto.key_file)"
        ) from None
    return spec.model_copy(update={"secret_environment_variables": values})


def _search_attributes_problem(err: RPCError) -> ServiceUnavailable | None:
    """The namespace lacks LoomOS's search attributes: say how to register them."""
    if err.status != RPCStatusCode.INVALID_ARGUMENT or "search attribute" not in err.message.lower():
        return None
    listed = ", ".join(f"{k}={v}" for k, v in sa.DEFINITIONS.items())
    return ServiceUnavailable(
        f"Temporal rejected LoomOS's search attributes ({err.message}); register them on the "
        f"namespace (`loomos dev` does; or `temporal operator search-attribute create` for {listed})"
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
    """The job's state from its recorded LoomJobStatus and how its workflow execution stands."""
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
    clauses = [f"WorkflowType = {_quote(names.JOB_WORKFLOW)}"]
    if states:
        clauses.append("(" + " OR ".join(_state_clause(s) for s in dict.fromkeys(states)) + ")")
    for key, value in ((sa.USER, user), (sa.TEAM, team), (sa.POOL, pool)):
        if value is not None:
            clauses.append(f"{key.name} = {_quote(value)}")
    return " AND ".join(clauses)


def summarize(execution: WorkflowExecution) -> JobSummary:
    attrs = execution.typed_search_attributes
    return JobSummary(
        job_id=names.job_id_of(execution.id),
        workflow_id=execution.id,
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


async def list_jobs(
    client: Client,
    states: list[JobState] | None,
    user: str | None,
    team: str | None,
    pool: str | None,
    limit: int,
    caller: Authorized,
) -> JobList:
    """Jobs matching the filters that the caller may see, newest first, from visibility alone."""
    team = job_access.list_scope(caller, team)
    query = build_list_query(states, user, team, pool)
    jobs: list[JobSummary] = []
    try:
        async for execution in client.list_workflows(query, limit=limit, page_size=min(limit, 1000)):
            jobs.append(summarize(execution))
    except RPCError as err:
        if problem := _search_attributes_problem(err):
            raise problem from err
        raise
    return JobList(jobs=jobs, count=len(jobs))


# --- one job ---------------------------------------------------------------------------------


async def _describe(
    client: Client, job_id: str
) -> tuple[WorkflowHandle[Any, Any], WorkflowExecutionDescription]:
    handle = client.get_workflow_handle(names.job_workflow_id(job_id))
    try:
        desc = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise NotFound(f"no job {job_id!r}") from err
        raise
    if desc.workflow_type != names.JOB_WORKFLOW:
        raise NotFound(f"no job {job_id!r}")
    return handle, desc


async def _status_from_history(
    client: Client, handle: WorkflowHandle[Any, Any], desc: WorkflowExecutionDescription
) -> JobStatus:
    """A finished job's status when no worker can answer its query: its start input plus how
    it closed (and its result, when it completed)."""
    start = None
    async for event in handle.fetch_history_events():
        start = event.workflow_execution_started_event_attributes
        break
    if start is None:
        raise UpstreamFailed(f"workflow {handle.id} has no start event")
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


async def job_status(
    client: Client, job_id: str, query_timeout: timedelta, caller: Authorized
) -> tuple[JobStatus, WorkflowExecutionDescription]:
    """The job workflow's own status (rebuilt from history when it closed and no worker can
    replay it), with the state corrected for workflows closed from outside."""
    handle, desc = await _describe(client, job_id)
    job_access.require_job(caller, Permission.JOBS_READ, job_id, desc.typed_search_attributes.get(sa.TEAM))
    running = desc.status == WorkflowExecutionStatus.RUNNING
    timeout = query_timeout if running else min(query_timeout, CLOSED_QUERY_TIMEOUT)
    try:
        status = await query_workflow(handle, JobWorkflow.get_status, timeout)
    except QueryTimedOut as err:
        if running:
            raise no_worker(f"job {job_id}'s workflow", timeout) from err
        status = await _status_from_history(client, handle, desc)
    except WorkflowGone as err:
        if running:
            raise NotFound(f"no job {job_id!r}") from err
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
        if pending.activity_type.name != names.RUN_TRAINING or not pending.heartbeat_details.payloads:
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


async def get_job(
    client: Client, settings: Settings, job_id: str, query_timeout: timedelta, caller: Authorized
) -> JobDetail:
    """The job's status, with the running attempt's live heartbeat folded in."""
    status, desc = await job_status(client, job_id, query_timeout, caller)
    updated_at = None
    if status.state == JobState.RUNNING:
        live = await _live_progress(client, desc, status.attempt)
        if live is not None:
            status.absorb(live[0], only_forward=True)
            updated_at = live[1]
    return JobDetail(
        **status.model_dump(),
        ui_url=workflow_ui_url(settings, status.workflow_id),
        progress_updated_at=updated_at,
    )


async def cancel_job(client: Client, job_id: str, caller: Authorized) -> CancelResponse:
    """Ask the job to stop: it checkpoints, then ends CANCELLED. Conflict once it finished."""
    handle, desc = await _describe(client, job_id)
    job_access.require_job(caller, Permission.JOBS_DELETE, job_id, desc.typed_search_attributes.get(sa.TEAM))
    state = effective_state(desc.typed_search_attributes.get(sa.STATUS), desc.status)
    # A job reaches its final state a moment before its workflow closes (it still records the
    # outcome); either means there is nothing left to cancel.
    if desc.status != WorkflowExecutionStatus.RUNNING or state.terminal:
        raise Conflict(f"job {job_id} already finished ({state.value}); nothing to cancel")
    try:
        await handle.cancel()
    except RPCError as err:
        # Finished between describe and cancel.
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise Conflict(f"job {job_id} already finished; nothing to cancel") from err
        raise
    log.info("job cancel requested", job_id=job_id, state=state.value)
    return CancelResponse(job_id=job_id, workflow_id=handle.id, state=state, cancel_requested=True)


# --- logs ------------------------------------------------------------------------------------


async def read_job_log(
    client: Client,
    job_id: str,
    attempt: int | None,
    node: str | None,
    tail_bytes: int,
    query_timeout: timedelta,
    caller: Authorized,
) -> LogsResult:
    """The tail of an attempt's log (default: the latest attempt, its first node), read on the
    node that ran it through the log workflow."""
    status, _ = await job_status(client, job_id, query_timeout, caller)
    ran = [a for a in status.attempts if a.nodes]
    if not ran:
        raise NotFound(f"job {job_id} has not run an attempt on a node yet (state {status.state.value})")
    if attempt is None:
        summary = ran[-1]
    else:
        found = [a for a in ran if a.attempt == attempt]
        if not found:
            known = ", ".join(str(a.attempt) for a in ran)
            raise NotFound(f"job {job_id} has no attempt {attempt} that ran on a node (attempts: {known})")
        summary = found[0]
    if node is None:
        node = summary.nodes[0]
    elif node not in summary.nodes:
        raise NotFound(
            f"attempt {summary.attempt} of job {job_id} ran on {', '.join(summary.nodes)}, not on {node}"
        )
    request = LogsRequest(job_id=job_id, attempt=summary.attempt, node_id=node, tail_bytes=tail_bytes)
    try:
        return await client.execute_workflow(
            FetchLogsWorkflow.run,
            request,
            id=names.logs_workflow_id(job_id, summary.attempt, node, uuid.uuid4().hex),
            task_queue=names.CONTROL_TASK_QUEUE,
            execution_timeout=LOGS_EXECUTION_TIMEOUT,
        )
    except WorkflowFailureError as err:
        raise _logs_failure(err, job_id, summary.attempt, node) from err


def _logs_failure(err: WorkflowFailureError, job_id: str, attempt: int, node: str) -> LoomCtlError:
    cause: Any = err.cause
    while cause is not None and not isinstance(cause, ApplicationError | TemporalTimeoutError):
        cause = getattr(cause, "cause", None)
    what = f"reading the log of job {job_id} attempt {attempt} on {node} failed"
    if isinstance(cause, ApplicationError):
        if cause.type == names.ErrorType.LOG_NOT_FOUND:
            return NotFound(cause.message)
        if cause.type == names.ErrorType.NODE_UNREACHABLE:
            return ServiceUnavailable(cause.message)
        return UpstreamFailed(f"{what}: {cause}")
    if isinstance(cause, TemporalTimeoutError):
        return no_worker("the log fetch", LOGS_EXECUTION_TIMEOUT)
    return UpstreamFailed(f"{what}: {err.cause}")
