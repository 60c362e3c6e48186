"""A job LoomCtl let through (the caller holds jobs:create) that admission then refuses: the real
control worker, admission on its own database, LoomCtl answering as a data scientist. The job
ends REJECTED with the reason, and REJECTED works wherever job states are shown: GET, the state
filter of the list (and its search attribute), the CLI's status line."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from loomos.api.app import create_app
from loomos.cli.formatting import styled_state
from loomos.models.identity import AuthMethod, Identity
from loomos.models.jobs import JobState
from tests.helpers.api_harness import AuditSink, control_worker, eventually
from tests.helpers.authz import authenticated
from tests.helpers.temporal_servers import settings_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def http(dev_server: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    scientist = Identity(
        subject=f"sci-{uuid.uuid4().hex[:6]}", team="vision", roles={"vision": ["data_scientist"]},
        auth_method=AuthMethod.API_TOKEN,
    )  # fmt: skip
    app = authenticated(create_app(settings_for(dev_server.client), dev_server.client), scientist)
    async with control_worker(dev_server.client, AuditSink()):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://loomctl") as client:
            yield client


async def test_a_job_admission_refuses_ends_rejected(http: httpx.AsyncClient) -> None:
    spec = {
        "name": "patients",
        "entrypoint": "train.py",
        "pool": f"nowhere-{uuid.uuid4().hex[:6]}",  # it never gets as far as a pool
        "datasets": [{"name": "ehr", "classification": "confidential"}],
    }
    r = await http.post("/api/v1/jobs", json=spec)
    assert r.status_code == 201, r.text  # the route checks jobs:create only
    job_id = r.json()["job_id"]

    async def rejected() -> dict | None:
        body = (await http.get(f"/api/v1/jobs/{job_id}")).json()
        return body if body["state"] == "REJECTED" else None

    job = await eventually(rejected, timeout=30)
    assert (
        job["error"]
        == "rejected: missing permission data:read:confidential in team vision (roles data_scientist)"
    )
    assert [c["state"] for c in job["history"]] == ["SUBMITTED", "REJECTED"]
    assert job["admission"]["admitted"] is False and job["attempts"] == []

    async def listed() -> list | None:
        jobs = (await http.get("/api/v1/jobs", params={"status": "REJECTED"})).json()["jobs"]
        return [j for j in jobs if j["job_id"] == job_id] or None

    (row,) = await eventually(listed, timeout=30)
    assert row["state"] == "REJECTED" and row["team"] == "vision"
    running = (await http.get("/api/v1/jobs", params={"status": "RUNNING"})).json()["jobs"]
    assert job_id not in {j["job_id"] for j in running}
    assert JobState.REJECTED.terminal and styled_state(JobState.REJECTED) == "[bold red]REJECTED[/]"
