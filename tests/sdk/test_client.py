"""The Python SDK against LoomCtl over real HTTP: results, waits, and the messages of every
kind of failure (local spec errors, 4xx with field paths, 409, 503, nothing listening)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError

from loomos.client import (
    AsyncLoomOSClient,
    JobWaitTimeout,
    LoomOSClient,
    LoomOSError,
    default_endpoint,
    error_message,
    spec_payload,
)
from loomos.models.jobs import JobState
from loomos.models.training import TrainingProgress, TrainingRequest
from tests.helpers.api_harness import LoomOSInThread, ScriptedNode, free_port

pytestmark = pytest.mark.timeout(120)

SPEC_YAML = """\
name: sdk-job
entrypoint: train.py
user: {user}
resources:
  gpu_count: 1
"""


@pytest.fixture
def loomos(loomos_stack: LoomOSInThread) -> LoomOSInThread:
    return loomos_stack


@pytest.fixture
def client(loomos: LoomOSInThread) -> Iterator[LoomOSClient]:
    with LoomOSClient(loomos.endpoint, timeout=20) as c:
        yield c


# --- happy paths ---------------------------------------------------------------------------------


def test_submit_file_wait_list_status(loomos: LoomOSInThread, client: LoomOSClient, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(SPEC_YAML.format(user="sdk-user"))
    submitted = client.submit(path)
    assert submitted.job_id.startswith("sdk-job-") and submitted.status == JobState.SUBMITTED
    final = client.wait(submitted.job_id, poll_interval=0.2, timeout=30)
    assert final.state == JobState.SUCCEEDED
    assert final.job_id == submitted.job_id and final.user == "sdk-user"
    assert client.get(submitted.job_id).nodes == [loomos.node.info.node_id]
    for _ in range(50):  # visibility is eventually consistent
        jobs = client.list(status=JobState.SUCCEEDED, user="sdk-user")
        if jobs:
            break
        time.sleep(0.2)
    assert [j.job_id for j in jobs] == [submitted.job_id]


def test_cluster_status_and_health(loomos: LoomOSInThread, client: LoomOSClient) -> None:
    snap = client.cluster_status()
    assert [n.node.node_id for n in snap.nodes] == [loomos.node.info.node_id]
    health = client.health()
    assert health.status == "ok" and health.temporal.reachable


def test_wait_times_out_with_last_status(loomos: LoomOSInThread, client: LoomOSClient) -> None:
    async def hang(req: TrainingRequest, node: ScriptedNode) -> TrainingProgress:
        while True:  # heartbeats carry the cancellation to the activity
            activity.heartbeat(TrainingProgress(attempt=req.attempt, step=1))
            await asyncio.sleep(0.1)

    loomos.node.behaviours["sdk-hang"] = hang
    job_id = client.submit({"name": "sdk-hang", "entrypoint": "train.py"}).job_id
    with pytest.raises(JobWaitTimeout) as caught:
        client.wait(job_id, poll_interval=0.2, timeout=1)
    assert caught.value.last.job_id == job_id
    assert str(caught.value).startswith(f"job {job_id} did not finish within 1s (state ")
    assert client.cancel(job_id).cancel_requested
    assert client.wait(job_id, poll_interval=0.2, timeout=30).state == JobState.CANCELLED


def test_failed_job_reports_error(loomos: LoomOSInThread, client: LoomOSClient) -> None:
    async def bad_args(req: TrainingRequest, node: ScriptedNode) -> TrainingProgress:
        raise ApplicationError(
            "train.py: error: unrecognized arguments: --lr", type="InvalidArguments", non_retryable=True
        )

    loomos.node.behaviours["sdk-bad-args"] = bad_args
    job_id = client.submit({"name": "sdk-bad-args", "entrypoint": "train.py"}).job_id
    final = client.wait(job_id, poll_interval=0.2, timeout=30)
    assert final.state == JobState.FAILED
    assert final.error == "InvalidArguments: train.py: error: unrecognized arguments: --lr"


# --- errors --------------------------------------------------------------------------------------


def test_unknown_job_and_finished_job(client: LoomOSClient) -> None:
    with pytest.raises(LoomOSError) as caught:
        client.get("nosuch-00000000")
    assert (caught.value.status_code, caught.value.message) == (404, "no job 'nosuch-00000000'")

    job_id = client.submit({"name": "sdk-done", "entrypoint": "train.py"}).job_id
    client.wait(job_id, poll_interval=0.2, timeout=30)
    with pytest.raises(LoomOSError) as caught:
        client.cancel(job_id)
    assert caught.value.status_code == 409
    assert caught.value.message == f"job {job_id} already finished (SUCCEEDED); nothing to cancel"


def test_server_validation_errors_are_flattened(client: LoomOSClient) -> None:
    with pytest.raises(LoomOSError) as caught:
        client.list(status="DONE", limit=5000)
    err = caught.value
    assert err.status_code == 422 and err.is_bad_input
    assert err.message.startswith("status.0: Input should be 'SUBMITTED', ")
    assert "; limit: Input should be less than or equal to 1000" in err.message

    for bad in ("Not_An_Id", "x?status=FAILED", "x#frag"):
        with pytest.raises(LoomOSError) as caught:
            client.get(bad)
        assert caught.value.status_code == 422, bad
        assert caught.value.message.startswith("job_id: String should match pattern")
    with pytest.raises(LoomOSError) as caught:
        client.cancel("a/b")
    assert (caught.value.status_code, caught.value.message) == (None, "invalid job id 'a/b'")
    assert caught.value.is_bad_input


def test_invalid_spec_is_rejected_locally_with_paths(tmp_path: Path) -> None:
    # No server at all: the spec is checked before any request.
    with LoomOSClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(LoomOSError) as caught:
            client.submit({"name": "ok", "entrypoint": "t.py", "resources": {"gpu_count": -2}, "epochs": 1})
        assert caught.value.status_code is None and caught.value.is_bad_input
        assert "resources.gpu_count: Input should be greater than or equal to 0" in caught.value.message
        assert "epochs: unknown field" in caught.value.message

        with pytest.raises(LoomOSError) as caught:
            client.submit(tmp_path / "missing.yaml")
        assert "missing.yaml: cannot read file" in caught.value.message


def test_nothing_listening() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    with LoomOSClient(endpoint) as client, pytest.raises(LoomOSError) as caught:
        client.get("x-00000000")
    assert caught.value.status_code is None and not caught.value.is_bad_input
    assert caught.value.message == f"cannot reach LoomCtl at {endpoint}: is `loomos dev` running?"


def test_temporal_down_is_reported(no_temporal_endpoint: str) -> None:
    with LoomOSClient(no_temporal_endpoint) as client, pytest.raises(LoomOSError) as caught:
        client.list()
    assert caught.value.status_code == 503
    assert caught.value.message.startswith("Temporal is not reachable at 127.0.0.1:")


def test_non_json_error_body_from_a_proxy() -> None:
    response = httpx.Response(502, text="<html><body>Bad Gateway</body></html>")
    assert error_message(response) == "HTTP 502: <html><body>Bad Gateway</body></html>"
    assert error_message(httpx.Response(500, json={"unexpected": True})) == "HTTP 500: Internal Server Error"


# --- endpoint resolution -------------------------------------------------------------------------


def test_endpoint_from_env_then_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOOMOS_API_ENDPOINT", "http://loomctl.example:9000/")
    assert LoomOSClient().endpoint == "http://loomctl.example:9000"
    monkeypatch.delenv("LOOMOS_API_ENDPOINT")
    (tmp_path / "temporal-dev.yaml").write_text("api:\n  host: 10.0.0.5\n  port: 8181\n")
    monkeypatch.setenv("LOOMOS_CONFIG", str(tmp_path / "temporal-dev.yaml"))
    assert default_endpoint() == "http://10.0.0.5:8181"
    (tmp_path / "temporal-dev.yaml").write_text("api:\n  port: 99999\n")
    with pytest.raises(LoomOSError, match=r"api.port: Input should be less than or equal to 65535"):
        default_endpoint()
    with pytest.raises(LoomOSError, match="endpoint must start with http:// or https://"):
        LoomOSClient("loomctl:8080")


def test_spec_payload_sends_only_what_was_set() -> None:
    assert spec_payload({"name": "a", "entrypoint": "t.py", "resources": {"gpu_count": 2}}) == {
        "name": "a",
        "entrypoint": "t.py",
        "resources": {"gpu_count": 2},
    }


# --- the async client shares all of it -----------------------------------------------------------


async def test_async_client(loomos: LoomOSInThread) -> None:
    async with AsyncLoomOSClient(loomos.endpoint) as client:
        submitted = await client.submit({"name": "sdk-async", "entrypoint": "train.py"})
        final = await client.wait(submitted.job_id, poll_interval=0.2, timeout=30)
        assert final.state == JobState.SUCCEEDED
        with pytest.raises(LoomOSError) as caught:
            await client.get("nosuch-00000000")
        assert caught.value.status_code == 404
        with pytest.raises(LoomOSError) as caught:
            await client.list(status="DONE")
        assert caught.value.message.startswith("status.0: Input should be")
    async with AsyncLoomOSClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(LoomOSError, match="cannot reach LoomCtl at"):
            await client.health()
