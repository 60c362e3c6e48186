"""loomos.train: the helpers a training script imports (checkpoints, progress, stop requests)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from loomos import train as loom

LOOMOS_VARS = [
    loom.ENV_JOB_ID, loom.ENV_ATTEMPT, loom.ENV_NODE_ID, loom.ENV_CHECKPOINT_DIR, loom.ENV_CHECKPOINT_ENABLED,
    loom.ENV_CHECKPOINT_INTERVAL_STEPS, loom.ENV_CHECKPOINT_INTERVAL_MINUTES, loom.ENV_MAX_CHECKPOINTS,
    loom.ENV_PROGRESS_FILE, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
    "MASTER_PORT",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for name in LOOMOS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    previous = signal.getsignal(signal.SIGTERM)
    loom.reset()
    yield
    loom.reset()
    signal.signal(signal.SIGTERM, previous)


def loomos_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **extra: str) -> tuple[Path, Path]:
    ckpt = tmp_path / "ckpt"
    progress = tmp_path / "progress.jsonl"
    monkeypatch.setenv(loom.ENV_JOB_ID, "job-1")
    monkeypatch.setenv(loom.ENV_ATTEMPT, "2")
    monkeypatch.setenv(loom.ENV_CHECKPOINT_DIR, str(ckpt))
    monkeypatch.setenv(loom.ENV_PROGRESS_FILE, str(progress))
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    loom.reset()
    return ckpt, progress


def events(progress: Path) -> list[dict]:
    return [json.loads(line) for line in progress.read_text().splitlines()] if progress.exists() else []


def test_context_without_loomos_env_degrades_to_local_defaults(tmp_path: Path) -> None:
    ctx = loom.context()
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (0, 1, 0)
    assert ctx.job_id is None and not ctx.under_loomos and ctx.attempt == 1
    assert ctx.device == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert ctx.backend == ("nccl" if torch.cuda.is_available() else "gloo")
    assert ctx.checkpoint_dir == "checkpoints"
    assert ctx.checkpoint_interval_minutes == loom.DEFAULT_INTERVAL_MINUTES

    loom.report(1, 10, loss=0.5)  # no progress channel: nothing is written anywhere
    uri = loom.save_checkpoint({"w": torch.ones(2)}, 1)
    assert uri == (tmp_path / "checkpoints" / "ckpt-00000001.pt").as_uri()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]
    assert loom.load_latest_checkpoint()["step"] == 1


def test_context_reads_loomos_and_torchrun_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    loomos_env(monkeypatch, tmp_path, LOOMOS_CHECKPOINT_INTERVAL_STEPS="5", LOOMOS_MAX_CHECKPOINTS="7",
               LOOMOS_NODE_ID="n1", RANK="1", WORLD_SIZE="4", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2")
    ctx = loom.context()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_world_size) == (1, 4, 1, 2)
    assert (ctx.job_id, ctx.attempt, ctx.node_id) == ("job-1", 2, "n1")
    assert ctx.checkpoint_interval_steps == 5 and ctx.checkpoint_interval_minutes is None
    assert ctx.max_checkpoints == 7 and not ctx.is_main


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("LOOMOS_CHECKPOINT_INTERVAL_STEPS", "ten", "not an integer"),
        ("LOOMOS_CHECKPOINT_INTERVAL_STEPS", "0", "at least 1"),
        ("LOOMOS_CHECKPOINT_INTERVAL_MINUTES", "-1", "must be positive"),
        ("LOOMOS_CHECKPOINT_ENABLED", "maybe", "not a boolean"),
        ("RANK", "3", "not below WORLD_SIZE"),
    ],
)
def test_bad_environment_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                          words: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=words):
        loom.context()


def test_save_is_atomic_and_leaves_no_temp_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ckpt, progress = loomos_env(monkeypatch, tmp_path)
    state = {"model": {"w": torch.arange(4.0)}, "note": "first"}
    uri = loom.save_checkpoint(state, 5, metrics={"loss": 1.5})
    assert uri == (ckpt / "ckpt-00000005.pt").as_uri()
    assert sorted(p.name for p in ckpt.iterdir()) == ["ckpt-00000005.pt"]
    assert "step" not in state  # the caller's dict is not modified

    # A writer that dies half-way leaves the existing checkpoint as it was and no debris.
    store = loom.LocalCheckpointStore(str(ckpt))

    def dies_half_way(fh) -> None:
        fh.write(b"partial bytes")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.write_atomic("ckpt-00000005.pt", dies_half_way)
    assert sorted(p.name for p in ckpt.iterdir()) == ["ckpt-00000005.pt"]
    loaded = loom.load_latest_checkpoint()
    assert loaded["step"] == 5 and loaded["note"] == "first"
    assert torch.equal(loaded["model"]["w"], torch.arange(4.0))

    saved = [e for e in events(progress) if e["event"] == "checkpoint"]
    assert saved == [{"event": "checkpoint", "step": 5, "uri": uri, "time": saved[0]["time"],
                      "metrics": {"loss": 1.5}}]


def test_prune_keeps_the_newest_max_checkpoints(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ckpt, _ = loomos_env(monkeypatch, tmp_path, LOOMOS_MAX_CHECKPOINTS="2")
    (ckpt).mkdir()
    (ckpt / ".tmp-999-ckpt-00000003.pt").write_bytes(b"left by a crashed writer")
    (ckpt / "notes.txt").write_text("not ours: never deleted")
    for step in (1, 2, 3, 10, 4):
        loom.save_checkpoint({"step_seen": step}, step)
    assert sorted(p.name for p in ckpt.iterdir()) == ["ckpt-00000004.pt", "ckpt-00000010.pt", "notes.txt"]
    assert [s for s, _ in loom.list_checkpoints()] == [10, 4]


def test_corrupt_or_partial_checkpoint_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, progress = loomos_env(monkeypatch, tmp_path, LOOMOS_MAX_CHECKPOINTS="10")
    loom.save_checkpoint({"v": torch.tensor([10.0])}, 10)
    loom.save_checkpoint({"v": torch.tensor([20.0])}, 20)
    good = (ckpt / "ckpt-00000020.pt").read_bytes()
    (ckpt / "ckpt-00000030.pt").write_bytes(good[: len(good) // 2])  # truncated copy
    (ckpt / "ckpt-00000040.pt").write_bytes(b"\x00garbage" * 10)
    torch.save({"v": 1}, ckpt / "ckpt-00000050.pt")  # no step: not written by save_checkpoint

    loaded = loom.load_latest_checkpoint(map_location="cpu")
    assert loaded["step"] == 20 and loaded["v"].item() == 20.0
    err = capsys.readouterr().err
    assert "ckpt-00000050.pt" in err and "ckpt-00000040.pt" in err and "ckpt-00000030.pt" in err
    resumed = [e for e in events(progress) if e["event"] == "resumed"]
    assert resumed[0]["step"] == 20 and resumed[0]["uri"].endswith("ckpt-00000020.pt")


class NotAllowedByWeightsOnly:
    pass


def test_weights_only_refusal_is_raised_not_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Skipping here would silently restart training from step 0.
    loomos_env(monkeypatch, tmp_path)
    loom.save_checkpoint({"obj": NotAllowedByWeightsOnly()}, 3)
    with pytest.raises(pickle.UnpicklingError):
        loom.load_latest_checkpoint()
    assert isinstance(loom.load_latest_checkpoint(weights_only=False)["obj"], NotAllowedByWeightsOnly)


def test_no_checkpoint_returns_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _, progress = loomos_env(monkeypatch, tmp_path)
    assert loom.load_latest_checkpoint() is None
    assert events(progress) == []


def test_interval_steps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    loomos_env(monkeypatch, tmp_path, LOOMOS_CHECKPOINT_INTERVAL_STEPS="10")
    assert [s for s in range(1, 36) if loom.should_checkpoint(s)] == [10, 20, 30]


def test_interval_minutes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    loomos_env(monkeypatch, tmp_path, LOOMOS_CHECKPOINT_INTERVAL_MINUTES="0.005")  # 0.3 s
    assert not loom.should_checkpoint(1)
    time.sleep(0.35)
    assert loom.should_checkpoint(2)
    assert not loom.should_checkpoint(3)  # the clock restarts at each checkpoint
    time.sleep(0.2)
    loom.save_checkpoint({}, 4)  # an explicit save restarts it too
    time.sleep(0.2)
    assert not loom.should_checkpoint(5)


def test_disabled_checkpointing_never_asks_to_save(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    loomos_env(monkeypatch, tmp_path, LOOMOS_CHECKPOINT_ENABLED="0", LOOMOS_CHECKPOINT_INTERVAL_STEPS="1")
    loom.request_stop()
    assert not any(loom.should_checkpoint(s) for s in range(1, 5))
    assert loom.stop_requested()


def test_sigterm_requests_a_stop_and_a_checkpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    loomos_env(monkeypatch, tmp_path, LOOMOS_CHECKPOINT_INTERVAL_STEPS="1000")
    loom.init(init_process_group=False)
    assert not loom.stop_requested()
    assert not loom.should_checkpoint(7)
    os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets a flag: this process survives
    time.sleep(0.05)  # the Python-level handler runs when the main thread next executes bytecode
    # The loop saves first and then leaves: stop_requested() answers as of the last
    # should_checkpoint(), so a signal between the two calls cannot skip the final save.
    assert not loom.stop_requested()
    assert loom.should_checkpoint(8)
    assert loom.stop_requested()


def test_report_coalesces_but_checkpoint_lines_are_immediate(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    _, progress = loomos_env(monkeypatch, tmp_path)
    for step in range(1, 201):
        loom.report(step, 200, loss=1.0 / step, lr=torch.tensor(0.1))
    lines = events(progress)
    assert lines[0]["step"] == 1 and lines[0]["total_steps"] == 200  # the first report goes out at once
    assert len(lines) < 20  # 200 calls within well under a second: coalesced
    loom.save_checkpoint({}, 200)
    lines = events(progress)
    assert [e["event"] for e in lines[-2:]] == ["progress", "checkpoint"]  # pending progress first
    assert lines[-2]["step"] == 200 and lines[-2]["metrics"]["loss"] == pytest.approx(1 / 200)
    assert lines[-1]["metrics"]["lr"] == pytest.approx(0.1)
    with pytest.raises(TypeError, match="metric 'loss'"):
        loom.report(1, loss="low")


def test_other_ranks_neither_write_nor_report(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ckpt, progress = loomos_env(monkeypatch, tmp_path, RANK="1", WORLD_SIZE="2")
    loom.report(1, 2, loss=0.1)
    assert loom.save_checkpoint({"x": 1}, 1) is None
    assert not ckpt.exists() and not progress.exists()


def test_init_without_torchrun_gives_a_one_process_group(tmp_path: Path) -> None:
    import torch.distributed as dist

    ctx = loom.init()
    try:
        assert dist.is_initialized() and dist.get_world_size() == 1 and dist.get_backend() == ctx.backend
        t = torch.ones(1, device=ctx.device)
        dist.all_reduce(t)
        assert t.item() == 1.0
    finally:
        loom.finish()
    assert not dist.is_initialized()


def test_locations(tmp_path: Path) -> None:
    assert isinstance(loom.open_store(f"file://{tmp_path}/c"), loom.LocalCheckpointStore)
    assert loom.open_store(f"file://{tmp_path}/c").directory == tmp_path / "c"
    assert loom.open_store("rel/dir").directory == tmp_path / "rel" / "dir"
    with pytest.raises(ValueError, match="unsupported"):
        loom.open_store("gs://bucket/x")
    with pytest.raises(ValueError, match="remote host"):
        loom.open_store("file://otherhost/x")


def test_s3_checkpoints(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import boto3
    from moto import mock_aws

    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="ckpts")
        _, progress = loomos_env(monkeypatch, tmp_path, LOOMOS_CHECKPOINT_DIR="s3://ckpts/jobs/job-1",
                                 LOOMOS_MAX_CHECKPOINTS="2")
        for step in (10, 20, 30):
            uri = loom.save_checkpoint({"w": torch.full((2,), float(step))}, step)
        assert uri == "s3://ckpts/jobs/job-1/ckpt-00000030.pt"
        keys = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="ckpts")["Contents"])
        assert keys == ["jobs/job-1/ckpt-00000020.pt", "jobs/job-1/ckpt-00000030.pt"]
        boto3.client("s3").put_object(Bucket="ckpts", Key="jobs/job-1/ckpt-00000040.pt", Body=b"torn")
        loaded = loom.load_latest_checkpoint()
        assert loaded["step"] == 30 and loaded["w"].tolist() == [30.0, 30.0]
        assert events(progress)[-1] == {"event": "resumed", "step": 30, "uri": uri,
                                        "time": events(progress)[-1]["time"]}


AGREEMENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from loomos import train as loom

    ctx = loom.init()
    stopped_at = None
    for step in range(1, 200):
        if ctx.rank == 1 and step == 7:
            loom.request_stop()  # only rank 1 is asked to stop, as when one rank gets SIGTERM first
        if loom.should_checkpoint(step):
            loom.save_checkpoint({"rank": ctx.rank}, step)
        if loom.stop_requested():
            stopped_at = step
            break
    print("AGREED", json.dumps({"rank": ctx.rank, "stopped_at": stopped_at}), flush=True)
    loom.finish()
    """
)


@pytest.mark.e2e
def test_ranks_agree_on_stop_under_torchrun(tmp_path: Path) -> None:
    script = tmp_path / "agree.py"
    script.write_text(AGREEMENT_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in LOOMOS_VARS}
    env.update({loom.ENV_CHECKPOINT_DIR: str(tmp_path / "ck"), loom.ENV_CHECKPOINT_INTERVAL_STEPS: "1000",
                loom.ENV_JOB_ID: "agree", loom.ENV_PROGRESS_FILE: str(tmp_path / "p.jsonl")})
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = [
        json.loads(line.split(" ", 1)[1]) for line in out.stdout.splitlines() if line.startswith("AGREED")
    ]
    assert sorted((r["rank"], r["stopped_at"]) for r in results) == [(0, 7), (1, 7)]
    # Rank 0 saved the stop checkpoint although only rank 1 had been asked to stop.
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["ckpt-00000007.pt"]
    assert torch.load(tmp_path / "ck" / "ckpt-00000007.pt")["rank"] == 0


UNSHARED_SCRIPT = textwrap.dedent(
    """
    import os
    from loomos import train as loom

    # Rank 1 looks at a directory of its own, as a second node with a node-local disk would.
    if os.environ["RANK"] == "1":
        os.environ[loom.ENV_CHECKPOINT_DIR] = os.environ[loom.ENV_CHECKPOINT_DIR] + "-other-node"
    ctx = loom.init()
    try:
        loom.load_latest_checkpoint()
    except RuntimeError as exc:
        print(f"RANK{ctx.rank} REFUSED {exc}", flush=True)
        raise SystemExit(3)
    print(f"RANK{ctx.rank} LOADED", flush=True)
    """
)


@pytest.mark.e2e
def test_ranks_refuse_to_resume_from_different_checkpoints(tmp_path: Path) -> None:
    script = tmp_path / "unshared.py"
    script.write_text(UNSHARED_SCRIPT)
    ck = tmp_path / "ck"
    ck.mkdir()
    torch.save({"step": 20, "w": torch.zeros(1)}, ck / "ckpt-00000020.pt")
    env = {k: v for k, v in os.environ.items() if k not in LOOMOS_VARS}
    env.update({loom.ENV_CHECKPOINT_DIR: str(ck), loom.ENV_JOB_ID: "unshared"})
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode != 0
    assert "RANK0 REFUSED" in out.stdout and "RANK1 REFUSED" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "not shared by every node" in out.stdout and "LOADED" not in out.stdout
