"""Jobs: submit, list, inspect, cancel, read logs (logic in loomos.api.services.jobs).

Permissions: submit jobs:create, list/inspect/logs jobs:read, cancel jobs:delete, each checked
in the caller's team by the route and in the job's team by the service (job_access).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from loomos.api.deps import QueryTimeoutDep, SettingsDep, TemporalDep
from loomos.api.patterns import JOB_ID_PATTERN, NODE_ID_PATTERN, POOL_PATTERN, TEAM_PATTERN, USER_PATTERN
from loomos.api.permissions import Caller, require, requires
from loomos.api.services import jobs
from loomos.models.api import CancelResponse, JobDetail, JobList, SubmitResponse
from loomos.models.jobs import JobState
from loomos.models.permissions import Permission
from loomos.models.spec import JobSpec
from loomos.models.training import LogsResult

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobIdPath = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="as returned by POST /api/v1/jobs")]


@router.post(
    "",
    status_code=201,
    response_model=SubmitResponse,
    summary="Submit a job (as the caller: its user and team come from the identity)",
    responses={
        403: {"description": "a missing permission, or a user/team in the spec the caller may not act as"},
        422: {"description": "the spec is invalid; `detail[].loc` names each bad field"},
    },
    **requires(Permission.JOBS_CREATE),
)
async def submit_job(
    spec: JobSpec,
    settings: SettingsDep,
    temporal: TemporalDep,
    caller: Annotated[Caller, require(Permission.JOBS_CREATE)],
) -> SubmitResponse:
    return await jobs.submit_job(await temporal.client(), settings, spec, caller)


@router.get(
    "",
    response_model=JobList,
    summary="List jobs (newest first): the caller's team unless `team` names another",
    **requires(Permission.JOBS_READ),
)
async def list_jobs(
    temporal: TemporalDep,
    caller: Annotated[Caller, require(Permission.JOBS_READ)],
    status: Annotated[list[JobState] | None, Query(description="repeat for several states")] = None,
    user: Annotated[str | None, Query(pattern=USER_PATTERN)] = None,
    team: Annotated[str | None, Query(pattern=TEAM_PATTERN)] = None,
    pool: Annotated[str | None, Query(pattern=POOL_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    return await jobs.list_jobs(await temporal.client(), status, user, team, pool, limit, caller)


@router.get(
    "/{job_id}",
    response_model=JobDetail,
    summary="A job's status, with live training progress while it runs",
    responses={
        404: {"description": "no such job (or not one the caller may read)"},
        503: {"description": "Temporal or worker unreachable"},
    },
    **requires(Permission.JOBS_READ),
)
async def get_job(
    job_id: JobIdPath,
    settings: SettingsDep,
    temporal: TemporalDep,
    query_timeout: QueryTimeoutDep,
    caller: Annotated[Caller, require(Permission.JOBS_READ)],
) -> JobDetail:
    return await jobs.get_job(await temporal.client(), settings, job_id, query_timeout, caller)


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=CancelResponse,
    summary="Cancel a job: it checkpoints, stops, and ends CANCELLED",
    responses={
        403: {"description": "jobs:delete missing in the job's team"},
        404: {"description": "no such job"},
        409: {"description": "the job already finished"},
    },
    **requires(Permission.JOBS_DELETE),
)
async def cancel_job(
    job_id: JobIdPath, temporal: TemporalDep, caller: Annotated[Caller, require(Permission.JOBS_DELETE)]
) -> CancelResponse:
    return await jobs.cancel_job(await temporal.client(), job_id, caller)


@router.get(
    "/{job_id}/logs",
    response_model=LogsResult,
    summary="The tail of one attempt's training log, read from the node that ran it",
    responses={
        404: {"description": "no such job, attempt, node or log"},
        503: {"description": "the node (or the control worker) did not answer"},
    },
    **requires(Permission.JOBS_READ),
)
async def job_logs(
    job_id: JobIdPath,
    temporal: TemporalDep,
    query_timeout: QueryTimeoutDep,
    caller: Annotated[Caller, require(Permission.JOBS_READ)],
    attempt: Annotated[int | None, Query(ge=1, description="default: the latest attempt")] = None,
    node: Annotated[
        str | None, Query(pattern=NODE_ID_PATTERN, description="default: the attempt's first node")
    ] = None,
    tail_bytes: Annotated[int, Query(ge=1, le=1024 * 1024)] = 64 * 1024,
) -> LogsResult:
    client = await temporal.client()
    return await jobs.read_job_log(client, job_id, attempt, node, tail_bytes, query_timeout, caller)
