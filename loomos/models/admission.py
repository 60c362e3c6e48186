"""The job workflow's admission step and the quota ledger it keeps, as activity inputs and results.

The identity being admitted is not here: it travels in the workflow's Temporal headers
(loomos.temporal.identity) and the admission activity reads it from there, so nothing a user
writes into a spec can change whose permissions are checked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from loomos.models.spec import JobSpec


class AdmissionRequest(BaseModel):
    """Input of `admit_job`: the job as its workflow holds it."""

    workflow_id: str
    job_id: str
    spec: JobSpec
    submitted_at: datetime


class AdmissionCheck(BaseModel):
    """One thing admission checked: a permission, a constraint, a quota."""

    name: str  # "jobs:create", "data:read:confidential", "max_concurrent_jobs", ...
    passed: bool
    detail: str
    limit: float | None = None
    value: float | None = None


class AdmissionDecision(BaseModel):
    """Result of `admit_job`. The same workflow asking again gets the same decision (the
    ledger keeps it), so an activity retry neither reserves twice nor flips a decision."""

    admitted: bool
    reason: str | None = None
    subject: str | None = None
    team: str
    roles: list[str] = Field(default_factory=list)
    policy_version: int = 0
    estimated_gpu_hours: float = 0.0
    estimated_cost_usd: float = 0.0
    checks: list[AdmissionCheck] = Field(default_factory=list)


class UsageMark(BaseModel):
    """Input of `record_job_usage`: an attempt started running on `gpus` GPUs, or stopped.
    GPU-hours and cost accrue between the two (up to "now" while it runs)."""

    workflow_id: str
    attempt: int = Field(ge=1)
    event: Literal["started", "ended"]
    at: datetime
    gpus: int = Field(0, ge=0)
    price_per_gpu_hour: float | None = Field(None, ge=0)


class AdmissionRelease(BaseModel):
    """Input of `release_admission`: the job left RUNNING for good (any way out)."""

    workflow_id: str
    reason: str
    at: datetime
