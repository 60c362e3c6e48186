"""`loomos submit / jobs / cluster` through Typer's CliRunner, against LoomCtl over real HTTP.

Errors must be one `error: ...` line with exit code 2 (bad input) or 1 (server or job),
never a traceback.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest
from click.testing import Result
from rich.console import Console
from temporalio import activity
from temporalio.exceptions import ApplicationError
from typer.testing import CliRunner

from loomos.cli import app
from loomos.cli.follow import follow_job
from loomos.client import LoomOSClient
from loomos.models.jobs import JobState
from loomos.models.training import CheckpointRef, TrainingProgress, TrainingRequest
from loomos.settings import Settings
from tests.helpers import REPO
from tests.helpers.api_harness import LoomOSInThread, ScriptedNode, free_port

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()


@pytest.fixture
def loomos(loomos_stack: LoomOSInThread) -> LoomOSInThread:
    return loomos_stack


def run(*args: str, endpoint: str | None = None) -> Result:
    env = {"COLUMNS": "200", "LOOMOS_API_ENDPOINT": endpoint or ""}
    return runner.invoke(app, list(args), env=env)


def one_error_line(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def write_spec(folder: Path, text: str, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


# --- bad input, no server needed ------------------------------------------------------------------


def test_submit_invalid_spec_names_fields_without_a_server(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "name: ok\nentrypoint: t.py\nresources:\n  gpu_count: -1\nepochs: 3\n")
    line = one_error_line(run("submit", str(spec), endpoint=f"http://127.0.0.1:{free_port()}"), 2)
    assert "resources.gpu_count: Input should be greater than or equal to 0" in line
    assert "epochs: unknown field" in line


def test_submit_unreadable_or_malformed_file(tmp_path: Path) -> None:
    line = one_error_line(run("submit", str(tmp_path / "nope.yaml")), 2)
    assert "nope.yaml: cannot read file" in line
    bad = write_spec(tmp_path, "name: [unclosed\n", "bad.yaml")
    line = one_error_line(run("submit", str(bad)), 2)
    assert "bad.yaml: not valid YAML: while parsing a flow sequence" in line and "^" not in line


def test_submit_with_nothing_listening(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    spec = write_spec(tmp_path, "name: ok\nentrypoint: t.py\n")
    line = one_error_line(run("submit", str(spec), endpoint=endpoint), 1)
    assert line == f"error: cannot reach LoomCtl at {endpoint}: is `loomos dev` running?"


def test_bad_status_option_is_a_usage_error() -> None:
    result = run("jobs", "list", "--status", "DONE")
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "DONE" in result.output


def test_server_side_validation_is_bad_input(no_temporal_endpoint: str) -> None:
    line = one_error_line(run("jobs", "status", "Not_An_Id", "--endpoint", no_temporal_endpoint), 2)
    assert line.startswith("error: job_id: String should match pattern")
    line = one_error_line(run("jobs", "cancel", "a/b", "--endpoint", no_temporal_endpoint), 2)
    assert line == "error: invalid job id 'a/b'"


def test_temporal_down_is_exit_1(no_temporal_endpoint: str) -> None:
    line = one_error_line(run("jobs", "list", endpoint=no_temporal_endpoint), 1)
    assert line.startswith("error: Temporal is not reachable at 127.0.0.1:")


# --- against a running stack ----------------------------------------------------------------------


def test_submit_follow_success_then_list_status_logs(loomos: LoomOSInThread, tmp_path: Path) -> None:
    async def train(req: TrainingRequest, node: ScriptedNode) -> TrainingProgress:
        node.logs[(req.job_id, req.attempt)] = "epoch 1 loss 0.40\nepoch 2 loss 0.20\n"
        return TrainingProgress(
            attempt=req.attempt,
            node_id=node.info.node_id,
            step=20,
            total_steps=20,
            metrics={"loss": 0.2},
            last_checkpoint=CheckpointRef(step=20, uri="file:///ckpt/cli-ok/step-20"),
        )

    loomos.node.behaviours["cli-ok"] = train
    spec = write_spec(tmp_path, "name: cli-ok\nentrypoint: train.py\nuser: cli-user\nteam: vision\n")
    result = run("submit", str(spec), "--follow", endpoint=loomos.endpoint)
    assert result.exit_code == 0, result.output
    job_id = result.stdout.split("submitted job ", 1)[1].split()[0]
    assert job_id.startswith("cli-ok-")
    assert f"Temporal UI: http://127.0.0.1:8233/namespaces/default/workflows/job-{job_id}" in result.stdout
    assert "QUEUED" in result.stdout and "RUNNING" in result.stdout
    assert f"job {job_id} SUCCEEDED at step 20, loss 0.2000 after 1 attempt(s)" in result.stdout

    for _ in range(50):  # visibility is eventually consistent
        listed = run("jobs", "list", "--user", "cli-user", "--status", "succeeded", endpoint=loomos.endpoint)
        if job_id in listed.stdout:
            break
        time.sleep(0.2)
    assert listed.exit_code == 0 and job_id in listed.stdout and "vision" in listed.stdout

    status = run("jobs", "status", job_id, endpoint=loomos.endpoint)
    assert status.exit_code == 0, status.output
    for text in (
        "SUCCEEDED",
        "Attempt",
        "1/4",
        "Step",
        "20/20 (100%)",
        "Loss",
        "0.2000",
        loomos.node.info.node_id,
        "step 20  file:///ckpt/cli-ok/step-20",
    ):
        assert text in status.stdout, (text, status.stdout)

    logs = run("jobs", "logs", job_id, "--tail", "18", endpoint=loomos.endpoint)
    assert logs.exit_code == 0, logs.output
    assert logs.stdout == "epoch 2 loss 0.20\n"
    assert f"# job {job_id} attempt 1 on {loomos.node.info.node_id}" in logs.stderr

    line = one_error_line(run("jobs", "logs", job_id, "--attempt", "3", endpoint=loomos.endpoint), 1)
    assert line == f"error: job {job_id} has no attempt 3 that ran on a node (attempts: 1)"
    line = one_error_line(run("jobs", "cancel", job_id, endpoint=loomos.endpoint), 1)
    assert line == f"error: job {job_id} already finished (SUCCEEDED); nothing to cancel"


def test_follow_shows_recovery_and_resume(loomos: LoomOSInThread, tmp_path: Path) -> None:
    async def crash_once(req: TrainingRequest, node: ScriptedNode) -> TrainingProgress:
        if req.attempt == 1:
            progress = TrainingProgress(
                attempt=1, step=5, total_steps=10, last_checkpoint=CheckpointRef(step=5, uri="file:///ckpt/5")
            )
            raise ApplicationError("rank 0 exited with code 1", progress, type="TrainingCrashed")
        return TrainingProgress(attempt=req.attempt, step=10, total_steps=10, resumed_from_step=5)

    loomos.node.behaviours["cli-crash"] = crash_once
    spec = write_spec(
        tmp_path, "name: cli-crash\nentrypoint: train.py\nretry_policy:\n  retry_delay_seconds: 0\n"
    )
    result = run("submit", str(spec), "--follow", endpoint=loomos.endpoint)
    assert result.exit_code == 0, result.output
    assert "RECOVERING  TrainingCrashed: rank 0 exited with code 1" in result.stdout
    assert "(attempt 2/4)" in result.stdout
    assert "attempt 2 resumed from step 5" in result.stdout
    assert "SUCCEEDED at step 10" in result.stdout


def test_follow_failed_job_exits_1(loomos: LoomOSInThread, tmp_path: Path) -> None:
    async def invalid(req: TrainingRequest, node: ScriptedNode) -> TrainingProgress:
        raise ApplicationError("entrypoint /x/train.py does not exist", type="InvalidJob", non_retryable=True)

    loomos.node.behaviours["cli-invalid"] = invalid
    spec = write_spec(tmp_path, "name: cli-invalid\nentrypoint: train.py\n")
    result = run("submit", str(spec), "--follow", endpoint=loomos.endpoint)
    line = one_error_line(result, 1)
    job_id = result.stdout.split("submitted job ", 1)[1].split()[0]
    assert line == (
        f"error: job {job_id} FAILED: InvalidJob: entrypoint /x/train.py does not exist "
        f"(details: loomos jobs status {job_id}; loomos jobs logs {job_id})"
    )


def test_cancel_running_job(loomos: LoomOSInThread, tmp_path: Path) -> None:
    async def long(req: TrainingRequest, node: ScriptedNode) -> TrainingProgress:
        while True:
            activity.heartbeat(TrainingProgress(attempt=req.attempt, step=3, total_steps=100))
            await asyncio.sleep(0.1)

    loomos.node.behaviours["cli-long"] = long
    spec = write_spec(tmp_path, "name: cli-long\nentrypoint: train.py\n")
    submitted = run("submit", str(spec), endpoint=loomos.endpoint)
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.split("submitted job ", 1)[1].split()[0]
    assert f"follow it:   loomos jobs status {job_id}" in submitted.stdout
    for _ in range(100):
        status = run("jobs", "status", job_id, endpoint=loomos.endpoint)
        if "3/100" in status.stdout:
            break
        time.sleep(0.1)
    assert "RUNNING" in status.stdout and "Live progress" in status.stdout

    result = run("jobs", "cancel", job_id, endpoint=loomos.endpoint)
    assert result.exit_code == 0, result.output
    assert f"cancel requested for {job_id} (was RUNNING)" in result.stdout


def test_unknown_job(loomos: LoomOSInThread) -> None:
    for args in (
        ("jobs", "status", "nosuch-00000000"),
        ("jobs", "cancel", "nosuch-00000000"),
        ("jobs", "logs", "nosuch-00000000"),
    ):
        assert one_error_line(run(*args, endpoint=loomos.endpoint), 1) == "error: no job 'nosuch-00000000'"


def test_cluster_status(loomos: LoomOSInThread) -> None:
    result = run("cluster", "status", endpoint=loomos.endpoint)
    assert result.exit_code == 0, result.output
    assert loomos.node.info.node_id in result.stdout and "available" in result.stdout
    assert "slots: 4 total" in result.stdout
    line = one_error_line(run("cluster", "status", "--pool", "nowhere", endpoint=loomos.endpoint), 1)
    assert line.startswith("error: no pool 'nowhere'")
    assert one_error_line(run("cluster", "status", "--pool", "Bad_Pool", endpoint=loomos.endpoint), 2)


# --- the walking skeleton, for real ---------------------------------------------------------------



@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_ddp_demo_end_to_end(tmp_path: Path) -> None:
    """examples/ddp-demo.yaml through the CLI, LoomCtl, the real workflows and a real node worker
    running torchrun: live progress while it runs, rank 1's crash at step 25, a resume from the
    step-20 checkpoint, success at step 80, and the first attempt's log."""
    settings = Settings.model_validate(
        {
            "logs": {"root": str(tmp_path / "logs")},
            "checkpoints": {"root": str(tmp_path / "ckpt")},
            "node": {"allowed_roots": [str(tmp_path), str(REPO)]},
        }
    )
    with LoomOSInThread("e2e-node", real_training=settings) as stack:
        submitted = run("submit", str(REPO / "examples" / "ddp-demo.yaml"), endpoint=stack.endpoint)
        assert submitted.exit_code == 0, submitted.output
        job_id = submitted.stdout.split("submitted job ", 1)[1].split()[0]

        with LoomOSClient(stack.endpoint) as client:
            live = None
            for _ in range(600):
                status = client.get(job_id)
                if status.state == JobState.RUNNING and status.step and status.progress_updated_at:
                    live = status
                    break
                assert not status.state.terminal, status
                time.sleep(0.1)
            assert live is not None and live.total_steps == 80, "no live progress seen while RUNNING"

            out = io.StringIO()
            final = follow_job(client, job_id, Console(file=out, width=120), poll_interval=0.5)
        shown = out.getvalue()
        assert final.state == JobState.SUCCEEDED, (final.error, shown)
        assert (final.step, final.attempt, final.resumed_from_step) == (80, 2, 20)
        assert "RECOVERING" in shown and "attempt 2 resumed from step 20" in shown

        logs = run("jobs", "logs", job_id, "--attempt", "1", endpoint=stack.endpoint)
        assert logs.exit_code == 0, logs.output
        assert f"=== loomos: job {job_id} attempt 1 node e2e-node" in logs.stdout
