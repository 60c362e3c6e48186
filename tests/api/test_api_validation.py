"""LoomCtl's answers to bad input and to an unreachable Temporal; no Temporal server needed.

The app under test points at a closed port: every request that gets past validation must
come back 503 with a clear message, and every invalid one 422 naming the field, first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.client import WorkflowExecutionStatus

from loomos.api.app import create_app
from loomos.api.services.jobs import build_list_query, effective_state
from loomos.models.jobs import JobState, JobStatus
from loomos.models.training import CheckpointRef, TrainingProgress
from loomos.settings import Settings
from tests.helpers.api_harness import free_port
from tests.helpers.authz import authenticated

GOOD_SPEC: dict[str, Any] = {"name": "mnist", "entrypoint": "train.py"}


@pytest.fixture(scope="module")
def unreachable_address() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def app(unreachable_address: str) -> FastAPI:
    return authenticated(create_app(Settings.model_validate({"temporal": {"address": unreachable_address}})))


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://loomctl") as c:
        yield c


def errors(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 422, r.text
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in r.json()["detail"]}


# --- the spec ------------------------------------------------------------------------------------


async def test_invalid_spec_fields_are_named(http: httpx.AsyncClient) -> None:
    body = {
        **GOOD_SPEC,
        "name": "MNIST Model",
        "resources": {"gpu_count": -1, "nodes": 0},
        "retry_policy": {"max_retries": 1000},
        "checkpoint_config": {"interval_steps": 0},
        "environment_variables": {"RANK": "3"},
        "epochs": 3,
    }
    found = errors(await http.post("/api/v1/jobs", json=body))
    assert set(found) == {
        "body.name",
        "body.resources.gpu_count",
        "body.resources.nodes",
        "body.retry_policy.max_retries",
        "body.checkpoint_config.interval_steps",
        "body.environment_variables",
        "body.epochs",
    }
    assert found["body.epochs"] == "unknown field"
    assert found["body.resources.gpu_count"] == "Input should be greater than or equal to 0"
    assert found["body.environment_variables"] == "'RANK' is set by LoomOS and cannot be overridden"


async def test_whole_spec_rules_are_reported_without_pydantic_noise(http: httpx.AsyncClient) -> None:
    body = {"name": "mnist", "entrypoint": "train.py", "command": ["-m", "pkg.train"]}
    r = await http.post("/api/v1/jobs", json=body)
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body"]
    assert err["msg"] == "give exactly one of 'entrypoint' (a script) or 'command' (e.g. ['-m', 'pkg'])"
    # The submitted body is not echoed back.
    assert set(err) == {"loc", "msg", "type"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", "not valid JSON at character 0: Expecting value"),
        ("[1, 2]", "Input should be a valid dictionary or object to extract fields from"),
        ("", "Field required"),
    ],
)
async def test_body_that_is_not_a_spec(http: httpx.AsyncClient, content: str, expected: str) -> None:
    r = await http.post("/api/v1/jobs", content=content, headers={"content-type": "application/json"})
    assert errors(r) == {"body": expected}


async def test_missing_required_name(http: httpx.AsyncClient) -> None:
    assert errors(await http.post("/api/v1/jobs", json={"entrypoint": "x.py"})) == {
        "body.name": "Field required"
    }


# --- path and query parameters --------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["Bad_Id", "x" * 200, "-leading-dash", "trailing-", "semi;colon"])
@pytest.mark.parametrize("suffix", ["", "/logs"])
async def test_bad_job_id_format_is_422(http: httpx.AsyncClient, job_id: str, suffix: str) -> None:
    found = errors(await http.get(f"/api/v1/jobs/{job_id}{suffix}"))
    assert list(found) == ["path.job_id"]
    assert found["path.job_id"].startswith("String should match pattern")


async def test_bad_job_id_on_cancel_is_422(http: httpx.AsyncClient) -> None:
    assert list(errors(await http.post("/api/v1/jobs/NOPE/cancel"))) == ["path.job_id"]


async def test_bad_status_filter_lists_the_valid_states(http: httpx.AsyncClient) -> None:
    found = errors(await http.get("/api/v1/jobs?status=RUNNING&status=DONE"))
    assert list(found) == ["query.status.1"]
    for state in JobState:
        assert state.value in found["query.status.1"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("user=al%22ice", "query.user"),  # a quote would end the visibility query's string
        ("team=a%20b", "query.team"),
        ("pool=Default", "query.pool"),
        ("limit=0", "query.limit"),
        ("limit=1001", "query.limit"),
        ("limit=many", "query.limit"),
    ],
)
async def test_bad_list_filters_are_422(http: httpx.AsyncClient, query: str, field: str) -> None:
    assert list(errors(await http.get(f"/api/v1/jobs?{query}"))) == [field]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("attempt=0", "query.attempt"),
        ("tail_bytes=0", "query.tail_bytes"),
        ("tail_bytes=2000000", "query.tail_bytes"),
        ("node=a/b", "query.node"),
    ],
)
async def test_bad_log_parameters_are_422(http: httpx.AsyncClient, query: str, field: str) -> None:
    assert list(errors(await http.get(f"/api/v1/jobs/mnist-0badc0de/logs?{query}"))) == [field]


async def test_bad_pool_name_is_422(http: httpx.AsyncClient) -> None:
    assert list(errors(await http.get("/api/v1/cluster/status?pool=Not_A_Pool"))) == ["query.pool"]


# --- Temporal unreachable -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/jobs", GOOD_SPEC),
        ("GET", "/api/v1/jobs", None),
        ("GET", "/api/v1/jobs?status=FAILED&user=alice", None),
        ("GET", "/api/v1/jobs/mnist-0badc0de", None),
        ("POST", "/api/v1/jobs/mnist-0badc0de/cancel", None),
        ("GET", "/api/v1/jobs/mnist-0badc0de/logs", None),
        ("GET", "/api/v1/cluster/status", None),
    ],
)
async def test_temporal_unreachable_is_503(
    http: httpx.AsyncClient, unreachable_address: str, method: str, path: str, body: Any
) -> None:
    r = await http.request(method, path, json=body)
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"Temporal is not reachable at {unreachable_address} (namespace default)")
    assert "connection refused" in detail
    assert "Is the Temporal server running" in detail


async def test_healthz_reports_temporal_down_but_answers(
    http: httpx.AsyncClient, unreachable_address: str
) -> None:
    r = await http.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded"
    assert body["temporal"]["reachable"] is False
    assert body["temporal"]["address"] == unreachable_address
    assert "not reachable" in body["temporal"]["error"]


async def test_validation_wins_over_unreachable_temporal(http: httpx.AsyncClient) -> None:
    # A bad request is the caller's to fix whatever the state of the cluster.
    assert (await http.post("/api/v1/jobs", json={"name": "x"})).status_code == 422


# --- the app itself --------------------------------------------------------------------------------


async def test_openapi_and_docs(http: httpx.AsyncClient) -> None:
    assert (await http.get("/docs")).status_code == 200
    paths = (await http.get("/openapi.json")).json()["paths"]
    for path in (
        "/healthz",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/jobs/{job_id}/logs",
        "/api/v1/cluster/status",
    ):
        assert path in paths
    assert "201" in paths["/api/v1/jobs"]["post"]["responses"]


async def test_unknown_route_is_json_404(http: httpx.AsyncClient) -> None:
    r = await http.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


async def test_unexpected_error_is_json_500(app: FastAPI) -> None:
    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaput")

    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://loomctl") as http:
        r = await http.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error (RuntimeError); see the API log"}


def test_module_level_app_for_uvicorn(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import loomos.api.app as module

    (tmp_path / "temporal-dev.yaml").write_text("api:\n  port: 9123\n")
    monkeypatch.setenv("LOOMOS_CONFIG", str(tmp_path / "temporal-dev.yaml"))
    monkeypatch.delitem(vars(module), "app", raising=False)
    app = module.app
    assert isinstance(app, FastAPI)
    assert app.state.settings.api.port == 9123
    assert module.app is app  # built once


# --- query building and status merging (pure) -----------------------------------------------------


def test_list_query_is_built_from_validated_values() -> None:
    assert build_list_query(None, None, None, None) == 'WorkflowType = "JobWorkflow"'
    assert build_list_query([JobState.RUNNING, JobState.FAILED], "alice", "nlp", "default") == (
        'WorkflowType = "JobWorkflow" AND ((LoomJobStatus = "RUNNING" AND ExecutionStatus = "Running") OR '
        '(LoomJobStatus = "FAILED" OR ExecutionStatus IN ("Failed", "Terminated", "TimedOut"))) AND '
        'LoomUser = "alice" AND LoomTeam = "nlp" AND LoomPool = "default"'
    )
    with pytest.raises(ValueError):
        build_list_query(None, 'x" OR WorkflowType = "SchedulerWorkflow', None, None)


@pytest.mark.parametrize(
    ("recorded", "execution", "expected"),
    [
        ("RUNNING", WorkflowExecutionStatus.RUNNING, JobState.RUNNING),
        ("RUNNING", WorkflowExecutionStatus.TERMINATED, JobState.FAILED),
        ("QUEUED", WorkflowExecutionStatus.TIMED_OUT, JobState.FAILED),
        ("RUNNING", WorkflowExecutionStatus.CANCELED, JobState.CANCELLED),
        ("CANCELLED", WorkflowExecutionStatus.CANCELED, JobState.CANCELLED),
        ("SUCCEEDED", WorkflowExecutionStatus.COMPLETED, JobState.SUCCEEDED),
        (None, WorkflowExecutionStatus.RUNNING, JobState.SUBMITTED),
        ("GARBAGE", WorkflowExecutionStatus.FAILED, JobState.FAILED),
    ],
)
def test_effective_state(
    recorded: str | None, execution: WorkflowExecutionStatus, expected: JobState
) -> None:
    assert effective_state(recorded, execution) == expected


def test_heartbeat_is_merged_only_forward() -> None:
    now = datetime.now(UTC)
    status = JobStatus(
        job_id="j-00000000",
        workflow_id="job-j-00000000",
        name="j",
        user="u",
        team="t",
        pool="p",
        state=JobState.RUNNING,
        attempt=2,
        max_attempts=3,
        submitted_at=now,
        step=50,
        metrics={"loss": 1.0, "acc": 0.5},
        last_checkpoint=CheckpointRef(step=50, uri="file:///c/50"),
    )
    status.absorb(
        TrainingProgress(
            attempt=2,
            step=40,
            metrics={"loss": 0.9},
            last_checkpoint=CheckpointRef(step=30, uri="file:///c/30"),
        ),
        only_forward=True,
    )
    assert status.step == 50 and status.last_checkpoint and status.last_checkpoint.step == 50
    assert status.metrics == {"loss": 0.9, "acc": 0.5}
    status.absorb(
        TrainingProgress(
            attempt=2,
            step=70,
            total_steps=100,
            resumed_from_step=50,
            last_checkpoint=CheckpointRef(step=60, uri="file:///c/60"),
        ),
        only_forward=True,
    )
    assert (status.step, status.total_steps, status.resumed_from_step) == (70, 100, 50)
    assert status.last_checkpoint.uri == "file:///c/60"
