"""Jobs: submit, list, inspect, cancel, read logs (logic in loomos.api.services.jobs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from loomos.api.deps import QueryTimeoutDep, SettingsDep, TemporalDep
from loomos.api.patterns import JOB_ID_PATTERN, NODE_ID_PATTERN, POOL_PATTERN, TEAM_PATTERN, USER_PATTERN
from loomos.api.services import jobs
from loomos.models.api import CancelResponse, JobDetail, JobList, SubmitResponse
from loomos.models.jobs import JobState
from loomos.models.spec import JobSpec
from loomos.models.training import LogsResult

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobIdPath = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="as returned by POST /api/v1/jobs")]


@router.post(
    "",
    status_code=201,
    response_model=SubmitResponse,
    summary="Submit a job",
    responses={422: {"description": "the spec is invalid; `detail[].loc` names each bad field"}},
)
async def submit_job(spec: JobSpec, settings: SettingsDep, temporal: TemporalDep) -> SubmitResponse:
    return await jobs.submit_job(await temporal.client(), settings, spec)


@router.get("", response_model=JobList, summary="List jobs (newest first)")
async def list_jobs(
    temporal: TemporalDep,
    status: Annotated[list[JobState] | None, Query(description="repeat for several states")] = None,
    user: Annotated[str | None, Query(pattern=USER_PATTERN)] = None,
    team: Annotated[str | None, Query(pattern=TEAM_PATTERN)] = None,
    pool: Annotated[str | None, Query(pattern=POOL_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    return await jobs.list_jobs(await temporal.client(), status, user, team, pool, limit)


@router.get(
    "/{job_id}",
    response_model=JobDetail,
    summary="A job's status, with live training progress while it runs",
    responses={404: {"description": "no such job"}, 503: {"description": "Temporal or worker unreachable"}},
)
async def get_job(
    job_id: JobIdPath, settings: SettingsDep, temporal: TemporalDep, query_timeout: QueryTimeoutDep
) -> JobDetail:
    return await jobs.get_job(await temporal.client(), settings, job_id, query_timeout)


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=CancelResponse,
    summary="Cancel a job: it checkpoints, stops, and ends CANCELLED",
    responses={404: {"description": "no such job"}, 409: {"description": "the job already finished"}},
)
async def cancel_job(job_id: JobIdPath, temporal: TemporalDep) -> CancelResponse:
    return await jobs.cancel_job(await temporal.client(), job_id)


@router.get(
    "/{job_id}/logs",
    response_model=LogsResult,
    summary="The tail of one attempt's training log, read from the node that ran it",
    responses={
        404: {"description": "no such job, attempt, node or log"},
        503: {"description": "the node (or the control worker) did not answer"},
    },
)
async def job_logs(
    job_id: JobIdPath,
    temporal: TemporalDep,
    query_timeout: QueryTimeoutDep,
    attempt: Annotated[int | None, Query(ge=1, description="default: the latest attempt")] = None,
    node: Annotated[
        str | None, Query(pattern=NODE_ID_PATTERN, description="default: the attempt's first node")
    ] = None,
    tail_bytes: Annotated[int, Query(ge=1, le=1024 * 1024)] = 64 * 1024,
) -> LogsResult:
    client = await temporal.client()
    return await jobs.read_job_log(client, job_id, attempt, node, tail_bytes, query_timeout)
