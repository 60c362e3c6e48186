"""`loomos dev`, `loomos demo`, `loomos api`: the real commands, as processes.

The e2e tests start the whole embedded stack (Temporal dev server, control worker, node
worker running torchrun, LoomCtl) and check what a user and an operator see: the job in
`temporal workflow list --query ...`, the summary of the demo, and no process left behind
after Ctrl-C or after `loomos dev` itself is killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from loomos.cli import app
from loomos.client import LoomOSClient
from loomos.devstack.binaries import temporal_cli
from loomos.devstack.stack import free_port, free_ports
from loomos.models.jobs import JobState
from tests.helpers import REPO

runner = CliRunner()


def stack_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a stack of its own: free ports, state under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOMOS_", "TEMPORAL_"))}
    temporal_port, ui_port, api_port = free_ports(3)
    env.update(
        {
            "LOOMOS_CONFIG": str(REPO / "temporal-dev.yaml"),
            "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
            "LOOMOS_TEMPORAL_UI_PORT": str(ui_port),
            "LOOMOS_TEMPORAL_DB_FILE": str(tmp_path / "temporal.db"),
            "LOOMOS_API_PORT": str(api_port),
            "LOOMOS_DB_URL": f"sqlite:///{tmp_path / 'loomdb.sqlite'}",
            "LOOMOS_CHECKPOINT_ROOT": str(tmp_path / "checkpoints"),
            "LOOMOS_LOG_ROOT": str(tmp_path / "logs"),
            "LOOMOS_NODE_ID": "stack-test-node",
            "LOOMOS_NODE_CANCEL_GRACE_S": "5",
            # The checkout (examples/) and the test's folder (its spec files, the demo's state).
            "LOOMOS_NODE_ALLOWED_ROOTS": json.dumps([str(REPO), str(tmp_path)]),
            "COLUMNS": "200",
        }
    )
    env.update(extra)
    return env


def one_error_line(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --- bad input: nothing starts ----------------------------------------------------------------


def test_dev_refuses_ports_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = stack_env(tmp_path, LOOMOS_API_PORT=str(port))
        line = one_error_line(runner.invoke(app, ["dev"], env=env), 1)
    assert f"api.port (LOOMOS_API_PORT): port {port} on 127.0.0.1 is already in use" in line
    assert "loomos dev" in line
    assert not (tmp_path / "temporal.db").exists(), "nothing may start when a port is taken"


def test_dev_refuses_one_port_for_two_services(tmp_path: Path) -> None:
    port = free_port()
    env = stack_env(tmp_path, TEMPORAL_ADDRESS=f"127.0.0.1:{port}", LOOMOS_API_PORT=str(port))
    line = one_error_line(runner.invoke(app, ["dev"], env=env), 1)
    assert f"api.port (LOOMOS_API_PORT): port {port} is given to two services" in line


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("LOOMOS_API_PORT", "eighty", "api.port: Input should be a valid integer"),
        ("TEMPORAL_ADDRESS", "localhost", "temporal.address: expected host:port"),
        ("LOOMOS_LOG_FORMAT", "xml", "logs.format:"),
    ],
)
def test_dev_bad_setting_names_key_and_variable(tmp_path: Path, var: str, value: str, expected: str) -> None:
    line = one_error_line(runner.invoke(app, ["dev"], env=stack_env(tmp_path, **{var: value})), 2)
    assert expected in line and f"${var}" in line


def test_search_attribute_retyped_in_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "temporal-dev.yaml"
    config.write_text("temporal:\n  search_attributes:\n    LoomGpuCount: Keyword\n")
    env = stack_env(tmp_path, LOOMOS_CONFIG=str(config))
    line = one_error_line(runner.invoke(app, ["dev"], env=env), 2)
    assert "temporal.search_attributes.LoomGpuCount: LoomOS needs type Int" in line


def test_api_refuses_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line(runner.invoke(app, ["api", "--port", str(port)], env=stack_env(tmp_path)), 1)
    assert f"api.port: port {port} on 127.0.0.1 is already in use" in line


def test_api_and_node_options_are_validated(tmp_path: Path) -> None:
    line = one_error_line(runner.invoke(app, ["api", "--port", "70000"], env=stack_env(tmp_path)), 2)
    assert "api.port" in line and "65535" in line
    result = runner.invoke(app, ["worker", "node", "--pool", "Bad Pool"], env=stack_env(tmp_path))
    line = one_error_line(result, 2)
    assert "node.pool" in line


def test_demo_with_invalid_spec_starts_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nentrypoint: t.py\nresources:\n  gpu_count: -2\n")
    line = one_error_line(runner.invoke(app, ["demo", str(spec)], env=stack_env(tmp_path)), 2)
    assert "resources.gpu_count" in line


# --- the real stack ---------------------------------------------------------------------------


class Running:
    """A `loomos ...` process whose output is collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path = REPO) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loomos.cli", *args],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode} before {text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout} s:\n{self.output}")
            time.sleep(0.1)

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def descendants(pid: int) -> set[int]:
    """Every live process whose parent chain leads to `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        children = {p for p, parent in parents.items() if parent in frontier}
        found |= children
        frontier = children
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.add(pid)
    return living


def wait_gone(pids: set[int], timeout: float = 30) -> set[int]:
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive(pids)


@pytest.fixture
def dev_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    yield stack_env(tmp_path)


def small_job(tmp_path: Path, steps: int = 30, interval: int = 3) -> Path:
    spec = tmp_path / f"small-{steps}.yaml"
    spec.write_text(
        f"name: stack-small\nentrypoint: {REPO / 'examples' / 'ddp_demo.py'}\n"
        f'args: ["--steps", "{steps}", "--print-every", "10", "--step-sleep", "0.1"]\n'
        "resources: {gpu_count: 2}\nuser: ada\nteam: vision\npriority: 70\n"
        f"checkpoint_config: {{enabled: true, interval_steps: {interval}}}\n"
    )
    return spec


def dev_token(state_dir: Path, endpoint: str) -> str:
    """The stack's admin token, which `loomos dev` leaves in its state folder (LoomCtl refuses
    anonymous requests; loomos.security.authn.bootstrap)."""
    from loomos.security.authn import credentials

    stored = credentials.load(endpoint, state_dir / "credentials.json")
    assert stored is not None, f"no credentials for {endpoint} in {state_dir}"
    return stored.token


def checkpoint_events(endpoint: str, job_id: str, token: str) -> list[dict]:
    r = httpx.get(
        f"{endpoint}/api/v1/events",
        params={"event_type": "model.training.checkpoint", "stream_id": f"job-{job_id}", "limit": 1000},
        headers={"Authorization": f"Bearer {token}"},
    )
    r.raise_for_status()
    return r.json()["events"]


def temporal_list(env: dict[str, str], query: str) -> list[dict]:
    out = subprocess.run(
        [temporal_cli(), "workflow", "list", "--address", env["TEMPORAL_ADDRESS"], "--query", query,
         "--output", "json"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return json.loads(out.stdout or "[]")


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_dev_runs_a_job_visible_to_temporal_and_stops_cleanly(
    tmp_path: Path, dev_env: dict[str, str]
) -> None:
    dev = Running(["dev"], dev_env)
    try:
        dev.wait_for("Ctrl-C stops everything.")  # the banner's last line
        ui = f"http://127.0.0.1:{dev_env['LOOMOS_TEMPORAL_UI_PORT']}"
        assert ui in dev.output and f"http://127.0.0.1:{dev_env['LOOMOS_API_PORT']}/docs" in dev.output
        stack_pids = descendants(dev.proc.pid)
        assert len(stack_pids) >= 4, stack_pids  # temporal, control, node, api (+ launch shims)

        endpoint = f"http://127.0.0.1:{dev_env['LOOMOS_API_PORT']}"
        token = dev_token(tmp_path, endpoint)
        with LoomOSClient(endpoint, token=token) as client:
            job_id = client.submit(small_job(tmp_path)).job_id
            # Live progress from the production node worker's heartbeats, while it trains.
            live = []
            while not (status := client.get(job_id)).state.terminal:
                if status.state == JobState.RUNNING and status.step is not None and status.step < 30:
                    live.append(status.step)
                time.sleep(0.2)
            final = client.wait(job_id, timeout=120)
        assert final.state == JobState.SUCCEEDED, final.error
        assert final.step == 30 and final.last_checkpoint is not None
        assert len(set(live)) >= 2, f"progress seen while running: {live}"

        # Cancel means: SIGTERM, the script checkpoints where it is, CANCELLED with that checkpoint.
        with LoomOSClient(endpoint, token=token) as client:
            stopped_id = client.submit(small_job(tmp_path, steps=2000, interval=5)).job_id
            # The step-5 checkpoint reaches LoomDB while the job trains (the node's notice).
            deadline = time.monotonic() + 90
            while not (audited := checkpoint_events(endpoint, stopped_id, token)):
                assert time.monotonic() < deadline, client.get(stopped_id)
                time.sleep(0.2)
            assert audited[0]["data"]["step"] == 5
            assert client.get(stopped_id).state == JobState.RUNNING
            client.cancel(stopped_id)
            cancelled = client.wait(stopped_id, timeout=90)
        assert cancelled.state == JobState.CANCELLED, cancelled.error
        ckpt = cancelled.last_checkpoint
        # Written on SIGTERM, at the step the job stopped at.
        assert ckpt is not None and ckpt.step >= 5 and ckpt.step == cancelled.step, cancelled
        steps = [e["data"]["step"] for e in checkpoint_events(endpoint, stopped_id, token)]
        assert steps == sorted(set(steps)) and ckpt.step in steps, steps  # each once, the stop one too
        assert cancelled.attempts[-1].outcome == "cancelled"

        # What an operator runs: the job, with LoomOS's search attributes, found by query.
        deadline = time.monotonic() + 20
        while not (rows := temporal_list(dev_env, 'LoomJobStatus="SUCCEEDED" AND LoomUser="ada"')):
            assert time.monotonic() < deadline, "job not listed by its search attributes"
            time.sleep(0.5)
        assert [r["execution"]["workflowId"] for r in rows] == [f"job-{job_id}"]
        assert temporal_list(dev_env, 'LoomJobStatus="RUNNING" AND LoomUser="ada"') == []
        assert temporal_list(dev_env, "LoomTeam=\"vision\" AND LoomPriority=70 AND LoomGpuCount=2")

        everything = stack_pids | descendants(dev.proc.pid)
        dev.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert dev.finish() == 0, dev.output
        assert "loomos dev: stopped" in dev.output
        assert wait_gone(everything, 10) == set(), "Ctrl-C left processes behind"
    finally:
        dev.kill()

    # History survives a restart (the db file); a SIGKILLed `loomos dev` takes its children along.
    dev = Running(["dev"], dev_env)
    try:
        dev.wait_for("Ctrl-C stops everything.")  # the banner's last line
        assert temporal_list(dev_env, 'LoomJobStatus="SUCCEEDED" AND LoomUser="ada"')
        children = descendants(dev.proc.pid)
        dev.proc.kill()
        dev.proc.wait()
        assert wait_gone(children) == set(), "services outlived a killed `loomos dev`"
    finally:
        dev.kill()


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_demo_succeeds_after_a_crash_and_resume(tmp_path: Path) -> None:
    """`make demo`: a real stack, rank 1 crashes at step 25, attempt 2 resumes from step 20."""
    (tmp_path / "temporal-dev.yaml").write_text((REPO / "temporal-dev.yaml").read_text())
    # A copy, not a symlink: the node runs jobs only under its allowed roots (here the copy's
    # folder), symlinks resolved.
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOMOS_", "TEMPORAL_"))}
    env["COLUMNS"] = "120"
    demo = Running(["demo"], env, cwd=tmp_path)
    try:
        code = demo.finish(timeout=240)
    finally:
        demo.kill()
    out = demo.output
    assert code == 0, out
    assert "RECOVERING" in out and "attempt 2 resumed from step 20" in out
    summary = out[out.index("LoomOS demo") :]
    expected = ("SUCCEEDED", "Attempts           2", "Resumed from step  20", "Final step         80/80")
    for text in expected:
        assert text in summary, summary
    assert "ckpt-00000080.pt" in summary.replace("│", "").replace("\n", "").replace(" ", "")
    assert (tmp_path / ".loomos" / "demo" / "loomdb.sqlite").is_file()
