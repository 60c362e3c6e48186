"""LoomCtl's request and response bodies. The API declares them as its response models and the
SDK parses answers with them, so server and client cannot drift apart silently."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from loomos.models.events import NewEvent
from loomos.models.jobs import JobState, JobStatus
from loomos.models.pricing import CostEstimate

# --- jobs --------------------------------------------------------------------------------------


class SubmitResponse(BaseModel):
    job_id: str
    workflow_id: str
    status: JobState = JobState.SUBMITTED
    ui_url: str = Field(description="the job's workflow in the Temporal Web UI")


class JobSummary(BaseModel):
    """One row of `GET /api/v1/jobs`: read from search attributes, no query to the workflow."""

    job_id: str
    workflow_id: str
    state: JobState
    user: str | None = None
    team: str | None = None
    pool: str | None = None
    gpu_type: str | None = None
    gpu_count: int | None = None
    priority: int | None = None
    execution_status: str | None = Field(None, description="Temporal's view: RUNNING, COMPLETED, ...")
    started_at: datetime | None = None
    closed_at: datetime | None = None


class JobList(BaseModel):
    jobs: list[JobSummary]
    count: int


class JobDetail(JobStatus):
    """The job workflow's status, with the running attempt's live heartbeat merged in."""

    ui_url: str | None = None
    progress_updated_at: datetime | None = Field(
        None, description="when the merged live progress was heartbeated; None: no live progress"
    )


class CancelResponse(BaseModel):
    job_id: str
    workflow_id: str
    state: JobState = Field(description="state when the request was accepted; CANCELLED follows")
    cancel_requested: bool = True


# --- health ------------------------------------------------------------------------------------


class TemporalHealth(BaseModel):
    address: str
    namespace: str
    reachable: bool
    error: str | None = None


class Health(BaseModel):
    status: str = Field(description="'ok', or 'degraded' when Temporal is unreachable")
    version: str
    temporal: TemporalHealth


# --- events ------------------------------------------------------------------------------------


class EventPage(BaseModel):
    events: list[dict[str, Any]]
    next_cursor: str | None


class AppendRequest(NewEvent):
    expected_version: int | None = None


class AppendResponse(BaseModel):
    position: int
    event_id: str


# --- marketplace -------------------------------------------------------------------------------


class OffersResponse(BaseModel):
    count: int
    offers: list[dict[str, Any]]
    as_of: dict[str, str]


class EstimateResponse(BaseModel):
    feasible: bool
    reasons: list[str]
    options: list[dict[str, Any]]
    estimate: CostEstimate | None = Field(None, description="breakdown and price record of option #1")
    assumptions: list[str]
