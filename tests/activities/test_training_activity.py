"""run_training / read_training_log with real torchrun processes (2 gloo ranks on CPU).

The activities run in temporalio's ActivityEnvironment, which records heartbeats and delivers
cancellation the way a worker does for an async activity.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from loomos.activities.training import TrainingActivities
from loomos.activities.training.oom import oom_kill_count
from loomos.models.jobs import FailureKind
from loomos.models.spec import JobSpec, load_spec
from loomos.models.training import LogsRequest, TrainingProgress, TrainingRequest
from loomos.settings import Settings
from loomos.temporal.names import ErrorType
from tests.helpers import REPO

DEMO_SPEC = REPO / "examples" / "ddp-demo.yaml"
NODE = "node-a"


def make_settings(root: Path, grace_s: float = 20) -> Settings:
    s = Settings()
    s.checkpoints.root = str(root / "checkpoints")
    s.logs.root = str(root / "logs")
    s.node.cancel_grace_s = grace_s
    s.node.allowed_roots = [str(root), str(REPO)]  # the test's folder and examples/
    return s


def demo_spec(args: list[str], interval_steps: int = 10, max_checkpoints: int = 3) -> JobSpec:
    spec = load_spec(DEMO_SPEC)
    spec.args = args
    spec.checkpoint_config.interval_steps = interval_steps
    spec.checkpoint_config.max_checkpoints = max_checkpoints
    return spec


def script_spec(folder: Path, source: str, **fields) -> JobSpec:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.py").write_text(textwrap.dedent(source))
    return JobSpec(name="script", entrypoint="job.py", working_directory=str(folder), **fields)


def new_job_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def request(job_id: str, spec: JobSpec, attempt: int = 1, **fields) -> TrainingRequest:
    return TrainingRequest(job_id=job_id, workflow_id=f"job-{job_id}", attempt=attempt, spec=spec,
                           nproc_per_node=2, **fields)


def live_processes_of(job_id: str) -> set[int]:
    """Live processes whose environment carries this job id (read from /proc directly)."""
    marker = f"LOOMOS_JOB_ID={job_id}\0".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            if stat[stat.rfind(b")") + 2 :].split()[0] == b"Z":
                continue
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker in fh.read():
                    found.add(int(entry))
        except (OSError, IndexError):
            continue
    return found


async def run_training(acts: TrainingActivities, req: TrainingRequest):
    """(result or ApplicationError, heartbeats)."""
    env = ActivityEnvironment()
    beats: list[TrainingProgress] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    try:
        return await env.run(acts.run_training, req), beats
    except ApplicationError as exc:
        return exc, beats


def progress_events(settings: Settings, job_id: str, attempt: int) -> list[dict]:
    path = Path(settings.logs.root) / job_id / f"attempt-{attempt}-node-0.progress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- an uninterrupted demo run, shared by the success and the resume tests --------------------


@pytest.fixture(scope="module")
def module_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("training")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def uninterrupted(module_root: Path):
    settings = make_settings(module_root)
    acts = TrainingActivities(settings, NODE)
    job_id = new_job_id("whole")
    spec = demo_spec(["--steps", "80", "--step-sleep", "0.02"])
    result, beats = await run_training(acts, request(job_id, spec))
    return settings, job_id, result, beats


@pytest.mark.e2e
async def test_successful_run_heartbeats_steps_and_checkpoints(uninterrupted) -> None:
    settings, job_id, result, beats = uninterrupted
    assert isinstance(result, TrainingProgress), result
    assert (result.exit_code, result.step, result.total_steps, result.attempt) == (0, 80, 80, 1)
    assert result.node_id == NODE and result.resumed_from_step is None
    assert 0 < result.metrics["loss"] < 2.5
    assert [c.step for c in result.checkpoints] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert result.last_checkpoint is not None and result.last_checkpoint.step == 80
    ckpt_dir = Path(settings.checkpoints.root) / job_id
    assert result.last_checkpoint.uri == (ckpt_dir / "ckpt-00000080.pt").as_uri()
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [
        "ckpt-00000060.pt", "ckpt-00000070.pt", "ckpt-00000080.pt"  # max_checkpoints: 3
    ]
    assert "DEMO_RESULT" in Path(result.log_path).read_text()

    steps = [b.step for b in beats if b.step is not None]
    assert steps == sorted(steps), "heartbeats go forward"
    assert any(0 < s < 80 for s in steps), "heartbeats while training, not only at the end"
    assert any(b.checkpoints and b.step < 80 for b in beats if b.step), "checkpoints heartbeated when saved"
    assert all(b.updated_at is not None for b in beats if b.step is not None)
    assert len(beats[-1].model_dump_json()) < 8 * 1024
    assert not live_processes_of(job_id)


@pytest.mark.e2e
async def test_crash_fails_the_attempt_and_the_next_attempt_resumes(tmp_path: Path, uninterrupted) -> None:
    settings = make_settings(tmp_path)
    acts = TrainingActivities(settings, NODE)
    job_id = new_job_id("crash")
    spec = demo_spec(["--steps", "80", "--step-sleep", "0.02", "--crash-at-step", "25", "--crash-rank", "1"])

    err, _ = await run_training(acts, request(job_id, spec, attempt=1))
    assert isinstance(err, ApplicationError), err
    assert err.type == FailureKind.TRAINING_CRASHED.value and not err.non_retryable
    assert "rank 1 (local rank 1) exited with code 1" in err.message
    assert "simulated crash of rank 1 at step 25" in err.message  # the log tail
    assert "ChildFailedError" not in err.message  # torchrun's own traceback is left out
    details = err.details[0]
    assert isinstance(details, TrainingProgress)
    assert details.exit_code == 1 and details.last_checkpoint.step == 20 and details.step >= 20
    assert [c.step for c in details.checkpoints] == [10, 20]
    assert not live_processes_of(job_id)

    result, _ = await run_training(acts, request(job_id, spec, attempt=2))
    assert isinstance(result, TrainingProgress), result
    assert result.exit_code == 0 and result.resumed_from_step == 20 and result.step == 80
    events = progress_events(settings, job_id, 2)
    assert events[0]["event"] == "resumed" and events[0]["step"] == 20
    assert all(e["step"] > 20 for e in events[1:]), "no step before the checkpoint is redone"
    log_text = Path(result.log_path).read_text()
    assert "starting at step 21 of 80" in log_text, "no step lost past the checkpoint"
    demo = json.loads(log_text.split("DEMO_RESULT ", 1)[1].splitlines()[0])
    assert (demo["start_step"], demo["last_step"]) == (20, 80)
    # Deterministic data and restored optimizer state: the resumed run ends where an
    # uninterrupted one does.
    whole = uninterrupted[2]
    assert result.metrics["loss"] == pytest.approx(whole.metrics["loss"], rel=1e-5)
    assert not live_processes_of(job_id)


async def test_missing_entrypoint_or_directory_is_invalid_job(tmp_path: Path) -> None:
    acts = TrainingActivities(make_settings(tmp_path), NODE)
    cases = {
        "entrypoint": JobSpec(name="x", entrypoint="nope.py", working_directory=str(tmp_path)),
        "does not exist": JobSpec(name="x", entrypoint="a.py", working_directory=str(tmp_path / "gone")),
        "absolute": JobSpec(name="x", entrypoint="a.py", working_directory="relative/dir"),
        "not found": JobSpec(name="x", command=["no-such-program-xyz"], working_directory=str(tmp_path)),
    }
    for words, spec in cases.items():
        started = time.monotonic()
        err, beats = await run_training(acts, request("bad-job", spec))
        assert isinstance(err, ApplicationError), err
        assert err.type == FailureKind.INVALID_JOB.value and err.non_retryable, err
        assert words in err.message
        assert isinstance(err.details[0], TrainingProgress)
        assert time.monotonic() - started < 1 and not beats
    assert not (tmp_path / "logs" / "bad-job").exists()

    err, _ = await run_training(acts, request("../escape", cases["entrypoint"]))
    assert err.type == FailureKind.INVALID_JOB.value and "safe identifier" in err.message


async def test_a_node_that_cannot_write_its_logs_fails_the_attempt_retryably(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('never started')\n")
    settings = make_settings(tmp_path)
    Path(settings.logs.root).write_text("a file where the log folder should be")
    spec = JobSpec(name="x", entrypoint="train.py", working_directory=str(tmp_path))
    err, _ = await run_training(TrainingActivities(settings, NODE), request(new_job_id("nolog"), spec))
    assert isinstance(err, ApplicationError), err
    assert err.type == FailureKind.TRAINING_CRASHED.value and not err.non_retryable
    assert "could not start the attempt" in err.message


async def test_unusable_checkpoint_uri_is_invalid_job(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('never started')\n")
    spec = JobSpec(name="x", entrypoint="train.py", working_directory=str(tmp_path))
    acts = TrainingActivities(make_settings(tmp_path), NODE)
    for uri, words in (("gs://bucket/ckpt", "unsupported"), ("file://host/ckpt", "remote host"),
                       ("s3:///no-bucket", "no bucket")):
        err, _ = await run_training(acts, request(new_job_id("uri"), spec, checkpoint_uri=uri))
        assert isinstance(err, ApplicationError), err
        assert err.type == FailureKind.INVALID_JOB.value and err.non_retryable and words in err.message


@pytest.mark.e2e
async def test_bad_argument_is_invalid_arguments(tmp_path: Path) -> None:
    acts = TrainingActivities(make_settings(tmp_path), NODE)
    job_id = new_job_id("badarg")
    err, _ = await run_training(acts, request(job_id, demo_spec(["--steps", "many"])))
    assert isinstance(err, ApplicationError), err
    assert err.type == FailureKind.INVALID_ARGUMENTS.value and err.non_retryable
    assert "exited with code 2" in err.message and "argument --steps" in err.message
    assert not live_processes_of(job_id)


@pytest.mark.e2e
async def test_one_rank_exiting_2_is_invalid_arguments(tmp_path: Path) -> None:
    spec = script_spec(tmp_path / "job", """
        import os, sys, time
        if os.environ["RANK"] == "1":
            print("rank 1: unknown option --frobnicate", file=sys.stderr)
            sys.exit(2)
        time.sleep(60)
    """)
    acts = TrainingActivities(make_settings(tmp_path), NODE)
    err, _ = await run_training(acts, request(new_job_id("exit2"), spec))
    assert err.type == FailureKind.INVALID_ARGUMENTS.value and err.non_retryable, err.message
    assert "rank 1 (local rank 1) exited with code 2" in err.message
    assert "unknown option --frobnicate" in err.message


@pytest.mark.e2e
async def test_out_of_memory_in_the_log_is_resource_exhausted(tmp_path: Path) -> None:
    spec = script_spec(tmp_path / "job", """
        import os, sys
        if os.environ["RANK"] == "0":
            print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
            sys.exit(1)
    """)
    acts = TrainingActivities(make_settings(tmp_path), NODE)
    err, _ = await run_training(acts, request(new_job_id("oom"), spec))
    assert err.type == FailureKind.RESOURCE_EXHAUSTED.value and not err.non_retryable, err.message
    assert "out of memory" in err.message


@pytest.mark.e2e
async def test_sigkill_without_an_oom_kill_is_a_crash(tmp_path: Path) -> None:
    if oom_kill_count() is None:
        pytest.skip("no OOM-kill counter readable here: a SIGKILL is then taken as an OOM kill")
    spec = script_spec(tmp_path / "job", """
        import os, signal, time
        if os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    """)
    acts = TrainingActivities(make_settings(tmp_path), NODE)
    err, _ = await run_training(acts, request(new_job_id("kill"), spec))
    assert err.type == FailureKind.TRAINING_CRASHED.value, err.message
    assert "rank 1 (local rank 1) killed by SIGKILL" in err.message


@pytest.mark.e2e
async def test_ranks_stuck_after_a_peer_failed_are_killed_early(tmp_path: Path) -> None:
    # Rank 0 stands for an NCCL rank blocked in a collective: it never acts on SIGTERM.
    # torchrun alone would wait 30 s before SIGKILLing it.
    spec = script_spec(tmp_path / "job", """
        import os, signal, sys, time
        if os.environ["RANK"] == "1":
            time.sleep(0.5)
            print("rank 1 gives up", file=sys.stderr, flush=True)
            sys.exit(1)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(300)
    """)
    acts = TrainingActivities(make_settings(tmp_path, grace_s=2), NODE)
    job_id = new_job_id("stuck")
    started = time.monotonic()
    err, _ = await run_training(acts, request(job_id, spec))
    assert time.monotonic() - started < 20
    assert err.type == FailureKind.TRAINING_CRASHED.value, err.message
    assert "rank 1 (local rank 1) exited with code 1; then rank 0 killed by SIGKILL" in err.message
    assert "rank 1 gives up" in err.message
    assert not live_processes_of(job_id)


@pytest.mark.e2e
async def test_environment_of_the_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A node worker that itself runs with launcher variables must not hand them to the job.
    monkeypatch.setenv("MASTER_PORT", "1")
    monkeypatch.setenv("LOOMOS_JOB_ID", "impostor")
    spec = script_spec(tmp_path / "job", """
        import json, os
        keys = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MY_SETTING"]
        keys += sorted(k for k in os.environ if k.startswith("LOOMOS_"))
        # One write per line: the two ranks share the log file and print() may take two writes.
        os.write(1, ("ENV " + json.dumps({k: os.environ.get(k) for k in keys}) + "\\n").encode())
    """, environment_variables={"MY_SETTING": "on"})
    spec.checkpoint_config.interval_steps = 7
    spec.checkpoint_config.max_checkpoints = 4
    settings = make_settings(tmp_path)
    acts = TrainingActivities(settings, NODE)
    job_id = new_job_id("env")
    elsewhere = tmp_path / "elsewhere"
    result, _ = await run_training(acts, request(job_id, spec, attempt=3, checkpoint_uri=elsewhere.as_uri()))
    assert isinstance(result, TrainingProgress), result
    envs = [json.loads(line[4:]) for line in Path(result.log_path).read_text().splitlines()
            if line.startswith("ENV ")]
    assert sorted(e["RANK"] for e in envs) == ["0", "1"]
    e = envs[0]
    assert e["WORLD_SIZE"] == "2" and e["MY_SETTING"] == "on"
    assert e["LOOMOS_JOB_ID"] == job_id and e["LOOMOS_ATTEMPT"] == "3" and e["LOOMOS_NODE_ID"] == NODE
    assert e["LOOMOS_CHECKPOINT_DIR"] == str(elsewhere) and elsewhere.is_dir()
    assert e["LOOMOS_CHECKPOINT_ENABLED"] == "1" and e["LOOMOS_CHECKPOINT_INTERVAL_STEPS"] == "7"
    assert e["LOOMOS_MAX_CHECKPOINTS"] == "4"
    progress_file = Path(settings.logs.root) / job_id / "attempt-3-node-0.progress.jsonl"
    assert e["LOOMOS_PROGRESS_FILE"] == str(progress_file)
    assert Path(result.log_path) == Path(settings.logs.root) / job_id / "attempt-3-node-0.log"


@pytest.mark.e2e
async def test_cancel_checkpoints_and_leaves_no_process(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, grace_s=20)
    acts = TrainingActivities(settings, NODE)
    job_id = new_job_id("cancel")
    spec = demo_spec(["--steps", "400", "--step-sleep", "0.05"], interval_steps=100)
    env = ActivityEnvironment()
    beats: list[TrainingProgress] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    task = asyncio.ensure_future(env.run(acts.run_training, request(job_id, spec)))
    deadline = time.monotonic() + 60
    while not beats or (beats[-1].step or 0) < 12:
        assert not task.done(), task.result()
        assert time.monotonic() < deadline, "training never reached step 12"
        await asyncio.sleep(0.05)
    running = live_processes_of(job_id)
    assert len(running) >= 3, running  # torchrun and two ranks

    cancelled_at = time.monotonic()
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - cancelled_at < settings.node.cancel_grace_s

    saved = [e for e in progress_events(settings, job_id, 1) if e["event"] == "checkpoint"]
    assert len(saved) == 1 and saved[0]["step"] >= 12 and saved[0]["step"] % 100 != 0, saved
    ckpt_dir = Path(settings.checkpoints.root) / job_id
    assert [p.name for p in ckpt_dir.iterdir()] == [f"ckpt-{saved[0]['step']:08d}.pt"]
    assert beats[-1].last_checkpoint.step == saved[0]["step"]  # final heartbeat after the stop
    # temporalio drops a cancelled activity's details: the workflow reads the final progress here.
    final = await ActivityEnvironment().run(
        acts.read_training_progress, LogsRequest(job_id=job_id, attempt=1, node_id=NODE)
    )
    assert final.last_checkpoint.step == saved[0]["step"] == final.step
    assert final.last_checkpoint.uri == (ckpt_dir / f"ckpt-{saved[0]['step']:08d}.pt").as_uri()
    assert final.log_path == str(Path(settings.logs.root) / job_id / "attempt-1-node-0.log")
    assert not live_processes_of(job_id)
    assert all(not Path(f"/proc/{pid}").exists() or _is_zombie(pid) for pid in running)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 :].split()[0] == b"Z"


@pytest.mark.e2e
async def test_cancel_kills_ranks_that_ignore_sigterm_and_their_detached_children(tmp_path: Path) -> None:
    # Ranks run in sessions of their own (torchrun starts them so), and this one also starts a
    # child in yet another session: none of them is in torchrun's process group.
    spec = script_spec(tmp_path / "job", """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
        print("ready", flush=True)
        time.sleep(300)
    """)
    settings = make_settings(tmp_path, grace_s=1)
    acts = TrainingActivities(settings, NODE)
    job_id = new_job_id("stubborn")
    env = ActivityEnvironment()
    task = asyncio.ensure_future(env.run(acts.run_training, request(job_id, spec)))
    deadline = time.monotonic() + 60
    while len(live_processes_of(job_id)) < 5:  # torchrun, 2 ranks, 2 detached children
        assert not task.done() and time.monotonic() < deadline
        await asyncio.sleep(0.1)
    started = time.monotonic()
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 10  # torchrun alone would wait 30 s before SIGKILL
    assert not live_processes_of(job_id)


FAKE_NODE_WORKER = """
import asyncio, sys
from pathlib import Path
from temporalio.testing import ActivityEnvironment
from loomos.activities.training import TrainingActivities
from loomos.models.training import TrainingRequest
from loomos.settings import Settings
from loomos.models.spec import load_spec

root, job_id, demo = sys.argv[1:4]
settings = Settings()
settings.checkpoints.root = root + "/checkpoints"
settings.logs.root = root + "/logs"
settings.node.allowed_roots = [root, str(Path(demo).parent)]
spec = load_spec(demo)
spec.args = ["--steps", "1000", "--step-sleep", "0.05"]
spec.checkpoint_config.interval_steps = 500
req = TrainingRequest(job_id=job_id, workflow_id="job-" + job_id, attempt=1, spec=spec, nproc_per_node=2)
asyncio.run(ActivityEnvironment().run(TrainingActivities(settings, "doomed").run_training, req))
"""


@pytest.mark.e2e
async def test_a_killed_node_worker_does_not_leave_the_job_running(tmp_path: Path) -> None:
    job_id = new_job_id("orphan")
    worker = subprocess.Popen(
        [sys.executable, "-c", FAKE_NODE_WORKER, str(tmp_path), job_id, str(DEMO_SPEC)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    progress = tmp_path / "logs" / job_id / "attempt-1-node-0.progress.jsonl"
    deadline = time.monotonic() + 60
    try:
        while not (progress.exists() and '"step":5' in progress.read_text()):
            assert worker.poll() is None and time.monotonic() < deadline, "training never reached step 5"
            await asyncio.sleep(0.1)
        assert len(live_processes_of(job_id)) >= 3
        worker.kill()  # SIGKILL: no chance to clean up
        worker.wait()
        deadline = time.monotonic() + 30
        while live_processes_of(job_id):
            assert time.monotonic() < deadline, "the job outlived its node worker"
            await asyncio.sleep(0.1)
    finally:
        if worker.poll() is None:
            worker.kill()
    # torchrun got SIGTERM from the kernel and passed it on: the ranks saved a stop checkpoint.
    saved = [json.loads(line) for line in progress.read_text().splitlines() if '"checkpoint"' in line]
    assert saved and saved[-1]["step"] >= 5 and saved[-1]["step"] % 500 != 0


@pytest.mark.e2e
async def test_processes_left_behind_by_a_finished_run_are_killed(tmp_path: Path) -> None:
    spec = script_spec(tmp_path / "job", """
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    """)
    acts = TrainingActivities(make_settings(tmp_path), NODE)
    job_id = new_job_id("leftover")
    result, _ = await run_training(acts, request(job_id, spec))
    assert isinstance(result, TrainingProgress) and result.exit_code == 0, result
    assert not live_processes_of(job_id)


# --- read_training_log ------------------------------------------------------------------------


async def read_log(acts: TrainingActivities, **fields):
    env = ActivityEnvironment()
    try:
        return await env.run(acts.read_training_log, LogsRequest(**fields))
    except ApplicationError as exc:
        return exc


@pytest.mark.e2e
async def test_read_training_log_of_a_real_run(uninterrupted) -> None:
    settings, job_id, result, _ = uninterrupted
    acts = TrainingActivities(settings, NODE)
    whole = await read_log(acts, job_id=job_id, attempt=1, node_id=NODE)
    assert whole.path == result.log_path and not whole.truncated
    assert whole.size_bytes == Path(result.log_path).stat().st_size
    assert "DEMO_RESULT" in whole.text and whole.text.startswith("=== loomos: job")
    tail = await read_log(acts, job_id=job_id, attempt=1, node_id=NODE, tail_bytes=200)
    assert tail.truncated and len(tail.text.encode()) <= 200 and whole.text.endswith(tail.text)


async def test_read_training_log_files_and_refusals(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    acts = TrainingActivities(settings, NODE)
    folder = Path(settings.logs.root) / "job-7"
    folder.mkdir(parents=True)
    (folder / "attempt-2-node-0.log").write_text("node rank 0 line\n" * 10)
    (folder / "attempt-2-node-1.log").write_text("node rank 1 line\n")
    (folder / "attempt-20-node-0.log").write_text("another attempt\n")
    both = await read_log(acts, job_id="job-7", attempt=2, node_id=NODE)
    assert "node rank 0 line" in both.text and "node rank 1 line" in both.text
    assert "another attempt" not in both.text and both.size_bytes == 170 + 17
    assert both.text.index("node rank 0") < both.text.index("node rank 1")
    small = await read_log(acts, job_id="job-7", attempt=2, node_id=NODE, tail_bytes=40)
    assert small.truncated and len(small.text.encode()) <= 40

    secret = tmp_path / "secret.txt"
    secret.write_text("do not show")
    (folder / "attempt-3-node-0.log").symlink_to(secret)
    for fields in (
        {"job_id": "job-7", "attempt": 9, "node_id": NODE},  # no such attempt
        {"job_id": "nothing", "attempt": 1, "node_id": NODE},  # no such job
        {"job_id": "../logs/job-7", "attempt": 2, "node_id": NODE},  # path tricks
        {"job_id": "job-7", "attempt": 3, "node_id": NODE},  # a symlink out of the log root
        {"job_id": "job-7", "attempt": 2, "node_id": "node-b"},  # asked of the wrong node
    ):
        err = await read_log(acts, **fields)
        assert isinstance(err, ApplicationError), (fields, err)
        assert err.type == ErrorType.LOG_NOT_FOUND and err.non_retryable
        assert "do not show" not in err.message

    env = ActivityEnvironment()
    with pytest.raises(ApplicationError) as missing:
        await env.run(acts.read_training_progress, LogsRequest(job_id="job-7", attempt=2, node_id=NODE))
    assert missing.value.type == ErrorType.PROGRESS_NOT_FOUND and missing.value.non_retryable
