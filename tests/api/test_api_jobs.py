"""LoomCtl's jobs and cluster routes against a real Temporal dev server and the real workflows.

The node `api-node-1` is scripted (tests/api_harness.py): it heartbeats progress, waits to be
cancelled, or serves a log, as each test needs. The last test uses the real training
activities of a node worker instead.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from loomos.activities.training import TrainingActivities
from loomos.api.app import create_app
from loomos.models.scheduler import NodeInfo, ReleaseRequest
from loomos.models.training import CheckpointRef, TrainingProgress, TrainingRequest
from loomos.temporal import search_attributes as sa
from loomos.temporal.names import node_task_queue
from tests.helpers.api_harness import AuditSink, ScriptedNode, control_worker, eventually, node_worker
from tests.helpers.authz import authenticated
from tests.helpers.temporal_servers import IDLE_NAMESPACE, settings_for, start_dev_server

pytestmark = pytest.mark.timeout(120)


@dataclass
class Stack:
    env: WorkflowEnvironment
    node: ScriptedNode
    app: FastAPI


@pytest.fixture(scope="module")
async def stack(dev_server: WorkflowEnvironment) -> AsyncIterator[Stack]:
    node = ScriptedNode("api-node-1")
    async with control_worker(dev_server.client, AuditSink()), node_worker(dev_server.client, node):
        app = authenticated(create_app(settings_for(dev_server.client), dev_server.client))
        app.state.query_timeout = timedelta(seconds=5)
        yield Stack(dev_server, node, app)


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(stack.app), base_url="http://loomctl") as c:
        yield c


def spec(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "entrypoint": "train.py", **extra}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def submit(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    r = await http.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()["job_id"]


async def wait_state(
    http: httpx.AsyncClient, job_id: str, *states: str, timeout: float = 20
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        r = await http.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        return body if body["state"] in states else None

    return await eventually(check, timeout=timeout)


async def listed(http: httpx.AsyncClient, query: str, expected: set[str]) -> list[dict[str, Any]]:
    async def check() -> tuple[list[dict[str, Any]]] | None:
        r = await http.get(f"/api/v1/jobs?{query}")
        assert r.status_code == 200, r.text
        jobs = r.json()["jobs"]
        return (jobs,) if {j["job_id"] for j in jobs} == expected else None

    return (await eventually(check))[0]


# --- submit and list ----------------------------------------------------------------------------


async def test_submit_starts_job_workflow_with_search_attributes(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    user = unique("carol")
    r = await http.post(
        "/api/v1/jobs", json=spec("quick", user=user, team="vision", resources={"gpu_count": 2, "nodes": 1})
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert re.fullmatch(r"quick-[0-9a-f]{8}", body["job_id"])
    assert body["workflow_id"] == f"job-{body['job_id']}"
    assert body["status"] == "SUBMITTED"
    assert body["ui_url"].endswith(f"/namespaces/default/workflows/{body['workflow_id']}")

    desc = await stack.env.client.get_workflow_handle(body["workflow_id"]).describe()
    assert desc.workflow_type == "JobWorkflow"
    assert desc.typed_search_attributes.get(sa.USER) == user
    assert desc.typed_search_attributes.get(sa.TEAM) == "vision"
    assert desc.typed_search_attributes.get(sa.GPU_COUNT) == 2

    final = await wait_state(http, body["job_id"], "SUCCEEDED")
    assert final["user"] == user and final["attempt"] == 1


async def test_list_filters_by_user_team_and_status(stack: Stack, http: httpx.AsyncClient) -> None:
    alice, bob = unique("alice"), unique("bob")
    a1 = await submit(http, spec("quick", user=alice, team="nlp"))
    a2 = await submit(http, spec("quick", user=alice, team="vision"))
    b1 = await submit(http, spec("quick", user=bob, team="nlp"))
    for job_id in (a1, a2, b1):
        await wait_state(http, job_id, "SUCCEEDED")

    await listed(http, f"user={alice}", {a1, a2})
    await listed(http, f"user={alice}&team=nlp", {a1})
    jobs = await listed(http, f"user={alice}&status=SUCCEEDED", {a1, a2})
    assert all(j["state"] == "SUCCEEDED" and j["closed_at"] for j in jobs)
    await listed(http, f"user={bob}&status=SUCCEEDED&status=FAILED", {b1})
    r = await http.get(f"/api/v1/jobs?user={alice}&status=RUNNING")
    assert r.json() == {"jobs": [], "count": 0}
    r = await http.get(f"/api/v1/jobs?user={alice}&limit=1")
    assert r.json()["count"] == 1


async def test_terminated_job_counts_as_failed(stack: Stack, http: httpx.AsyncClient) -> None:
    """A workflow ended from outside (temporal workflow terminate) keeps a stale LoomJobStatus;
    the API reports it FAILED everywhere, and cancel is refused."""
    user = unique("dave")

    async def hang(req: TrainingRequest, node: ScriptedNode) -> TrainingProgress:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    stack.node.behaviours["hang"] = hang
    job_id = await submit(http, spec("hang", user=user))
    await wait_state(http, job_id, "RUNNING")
    await stack.env.client.get_workflow_handle(f"job-{job_id}").terminate(reason="operator")
    # A terminated job cannot release its slot itself; give it back as an operator would.
    await stack.env.client.get_workflow_handle("scheduler-default").signal(
        "release", ReleaseRequest(job_id=job_id, attempt=1)
    )

    jobs = await listed(http, f"user={user}&status=FAILED", {job_id})
    assert jobs[0]["execution_status"] == "TERMINATED"
    await listed(http, f"user={user}&status=RUNNING", set())
    body = (await http.get(f"/api/v1/jobs/{job_id}")).json()
    assert (body["state"], body["error"]) == ("FAILED", "workflow terminated")
    assert body["finished_at"] is not None
    r = await http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 409
    assert "already finished" in r.json()["detail"]


# --- one job: live progress, cancel -------------------------------------------------------------


async def test_running_job_merges_heartbeat_then_cancels(stack: Stack, http: httpx.AsyncClient) -> None:
    cancelled = asyncio.Event()

    async def train(req: TrainingRequest, node: ScriptedNode) -> TrainingProgress:
        progress = TrainingProgress(
            attempt=req.attempt,
            node_id=node.info.node_id,
            step=42,
            total_steps=100,
            metrics={"loss": 0.25},
            resumed_from_step=None,
            last_checkpoint=CheckpointRef(step=40, uri="file:///ckpt/step-40"),
        )
        try:
            while True:
                activity.heartbeat(progress)
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            node.cancelled.append(req.job_id)
            cancelled.set()
            raise

    stack.node.behaviours["longrun"] = train
    job_id = await submit(http, spec("longrun"))

    async def live() -> dict[str, Any] | None:
        body = (await http.get(f"/api/v1/jobs/{job_id}")).json()
        return body if body["state"] == "RUNNING" and body["step"] is not None else None

    body = await eventually(live)
    # None of this is in the workflow's own status yet: it only learns it when the attempt ends.
    assert body["step"] == 42 and body["total_steps"] == 100
    assert body["metrics"] == {"loss": 0.25}
    assert body["last_checkpoint"]["step"] == 40
    assert body["progress_updated_at"] is not None
    assert body["nodes"] == ["api-node-1"]

    r = await http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202, r.text
    assert r.json() == {
        "job_id": job_id,
        "workflow_id": f"job-{job_id}",
        "state": "RUNNING",
        "cancel_requested": True,
    }
    await asyncio.wait_for(cancelled.wait(), 15)
    final = await wait_state(http, job_id, "CANCELLED")
    assert final["finished_at"] is not None
    assert final["progress_updated_at"] is None

    r = await http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 409
    assert r.json()["detail"] == f"job {job_id} already finished (CANCELLED); nothing to cancel"


async def test_unknown_job_is_404_everywhere(http: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", "/api/v1/jobs/nosuch-00000000"),
        ("POST", "/api/v1/jobs/nosuch-00000000/cancel"),
        ("GET", "/api/v1/jobs/nosuch-00000000/logs"),
    ):
        r = await http.request(method, path)
        assert r.status_code == 404, (path, r.text)
        assert r.json() == {"detail": "no job 'nosuch-00000000'"}


async def test_scheduler_workflow_is_not_a_job(http: httpx.AsyncClient) -> None:
    # `job-` + id is the only way in: other workflows' ids never resolve to a job.
    r = await http.get("/api/v1/jobs/scheduler-default")
    assert r.status_code == 404


# --- logs ----------------------------------------------------------------------------------------


async def test_logs_of_latest_attempt_and_bad_choices(stack: Stack, http: httpx.AsyncClient) -> None:
    async def write_log(req: TrainingRequest, node: ScriptedNode) -> TrainingProgress:
        node.logs[(req.job_id, req.attempt)] = "step 1 loss 0.9\nstep 2 loss 0.5\n"
        return TrainingProgress(attempt=req.attempt, node_id=node.info.node_id, step=2, total_steps=2)

    stack.node.behaviours["logged"] = write_log
    job_id = await submit(http, spec("logged"))
    await wait_state(http, job_id, "SUCCEEDED")

    r = await http.get(f"/api/v1/jobs/{job_id}/logs")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "step 1 loss 0.9\nstep 2 loss 0.5\n"
    assert (body["attempt"], body["node_id"], body["truncated"]) == (1, "api-node-1", False)

    r = await http.get(f"/api/v1/jobs/{job_id}/logs?attempt=1&node=api-node-1&tail_bytes=16")
    assert r.json()["text"] == "step 2 loss 0.5\n" and r.json()["truncated"] is True

    r = await http.get(f"/api/v1/jobs/{job_id}/logs?attempt=2")
    assert r.status_code == 404
    assert r.json()["detail"] == f"job {job_id} has no attempt 2 that ran on a node (attempts: 1)"
    r = await http.get(f"/api/v1/jobs/{job_id}/logs?node=other-node")
    assert r.status_code == 404
    assert "ran on api-node-1, not on other-node" in r.json()["detail"]


async def test_missing_log_is_404(stack: Stack, http: httpx.AsyncClient) -> None:
    job_id = await submit(http, spec("nolog"))
    await wait_state(http, job_id, "SUCCEEDED")
    r = await http.get(f"/api/v1/jobs/{job_id}/logs")
    assert r.status_code == 404
    assert r.json()["detail"] == f"no log of job {job_id} attempt 1 on node api-node-1"


# --- cluster -------------------------------------------------------------------------------------


async def test_cluster_status(http: httpx.AsyncClient) -> None:
    r = await http.get("/api/v1/cluster/status")
    assert r.status_code == 200, r.text
    snap = r.json()
    assert snap["pool"] == "default"
    node = next(n for n in snap["nodes"] if n["node"]["node_id"] == "api-node-1")
    assert node["node"]["slots"] == 4 and node["available"] is True
    assert snap["total_slots"] >= 4

    r = await http.get("/api/v1/cluster/status?pool=nowhere")
    assert r.status_code == 404
    assert "no pool 'nowhere'" in r.json()["detail"]


# --- no control worker ----------------------------------------------------------------------------


async def test_no_control_worker_is_503_not_a_hang(stack: Stack) -> None:
    app = authenticated(create_app(settings_for(stack.env.client, namespace=IDLE_NAMESPACE)))
    app.state.query_timeout = timedelta(seconds=1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://loomctl") as http:
        # Submitting needs no worker: the job waits in Temporal until one polls.
        job_id = await submit(http, spec("waiting"))
        r = await http.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 503
        assert "is a control worker (`loomos worker control`) running?" in r.json()["detail"]
        r = await http.get(f"/api/v1/jobs/{job_id}/logs")
        assert r.status_code == 503
        # A job that never ran and was terminated has no worker to replay it: the API rebuilds
        # its status from the workflow's start event instead of timing out.
        await app.state.temporal.get_workflow_handle(f"job-{job_id}").terminate()
        r = await http.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["state"], body["name"], body["error"]) == ("FAILED", "waiting", "workflow terminated")


# --- end to end with the real training activity ---------------------------------------------------


async def test_missing_script_fails_job_end_to_end(
    stack: Stack, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Real node worker (TrainingActivities) in its own pool: a job whose script does not exist
    ends FAILED (InvalidJob, not retried), visible through GET and the FAILED filter."""
    settings = settings_for(stack.env.client)
    settings.logs.root = str(tmp_path / "logs")
    settings.checkpoints.root = str(tmp_path / "ckpt")
    settings.node.allowed_roots = [str(tmp_path)]
    training = TrainingActivities(settings, "e2e-node")
    info = NodeInfo(
        node_id="e2e-node",
        pool="e2e",
        task_queue=node_task_queue("e2e-node"),
        host="127.0.0.1",
        accelerator="cpu",
        gpu_type="cpu",
        slots=1,
    )
    user = unique("erin")
    worker = Worker(
        stack.env.client,
        task_queue=info.task_queue,
        activities=[training.run_training, training.read_training_log],
    )
    async with worker:
        from loomos.activities.scheduling import announce_node

        await announce_node(stack.env.client, info)
        job_id = await submit(
            http,
            spec(
                "missing-script",
                user=user,
                pool="e2e",
                working_directory=str(tmp_path),
                resources={"gpu_count": 1, "gpu_type": "cpu"},
            ),
        )
        final = await wait_state(http, job_id, "FAILED", "SUCCEEDED", timeout=30)
        assert final["state"] == "FAILED"
        assert final["error"].startswith("InvalidJob: entrypoint ")
        assert "does not exist on node e2e-node" in final["error"]
        assert final["attempt"] == 1 and final["attempts"][0]["failure_kind"] == "InvalidJob"

        jobs = await listed(http, f"status=FAILED&user={user}", {job_id})
        assert jobs[0]["state"] == "FAILED" and jobs[0]["pool"] == "e2e"

        r = await http.get(f"/api/v1/jobs/{job_id}/logs")
        assert r.status_code == 404, r.text


async def test_logs_from_a_node_that_is_gone_is_503(stack: Stack, http: httpx.AsyncClient) -> None:
    """The attempt ran on a node whose worker has since stopped: the log read is not picked up
    and the API says the node is unreachable (after the log workflow's 10 s pickup limit)."""
    gone = ScriptedNode("gone-node", pool="gone")
    async with node_worker(stack.env.client, gone):
        job_id = await submit(http, spec("short-lived", pool="gone"))
        await wait_state(http, job_id, "SUCCEEDED")
    r = await http.get(f"/api/v1/jobs/{job_id}/logs")
    assert r.status_code == 503, r.text
    assert r.json()["detail"].startswith("node gone-node did not answer within 10s")


async def test_unknown_namespace_is_a_configuration_error_not_404(stack: Stack) -> None:
    app = authenticated(create_app(settings_for(stack.env.client, namespace="no-such-namespace")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://loomctl") as http:
        r = await http.get("/api/v1/jobs/mnist-0badc0de")
        assert r.status_code == 503
        assert r.json()["detail"].startswith("namespace 'no-such-namespace' does not exist on Temporal at ")
        health = (await http.get("/healthz")).json()
        assert health["status"] == "degraded" and "no-such-namespace" in health["temporal"]["error"]


async def test_namespace_without_loomos_search_attributes_is_503() -> None:
    """A Temporal started without LoomOS's search attributes (not through `loomos dev`)."""
    bare = await start_dev_server(search_attributes=False)
    try:
        app = authenticated(create_app(settings_for(bare.client), bare.client))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://loomctl") as http:
            for r in (await http.post("/api/v1/jobs", json=spec("x")), await http.get("/api/v1/jobs?user=a")):
                assert r.status_code == 503, r.text
                assert "register them on the namespace" in r.json()["detail"]
                assert "LoomJobStatus=Keyword" in r.json()["detail"]
    finally:
        await bare.shutdown()
