"""Training activities: run one node's share of an attempt with torchrun, and read its records.

`run_training` starts `python -m torch.distributed.run` for the request's ranks, heartbeats the
progress channel the script's rank 0 writes (see loomos/train.py), and turns the exit into a
result or a classified ApplicationError the job workflow decides retries on. It never runs
inside the training processes. No process of an attempt outlives it: a cancelled activity stops
them with SIGTERM (the script saves a checkpoint) and SIGKILL after the grace period; ranks that
hang after a peer failed are killed; leftovers are found by a per-attempt environment token;
and torchrun gets SIGTERM from the kernel if the node worker itself dies.

`read_training_log` and `read_training_progress` read an attempt's log and progress record on
the node that ran it (logs and progress files stay on the node).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from loomos import train as contract
from loomos.models.jobs import FailureKind
from loomos.models.spec import RESERVED_ENV
from loomos.models.training import (
    CheckpointRef,
    CheckpointsSaved,
    LogsRequest,
    LogsResult,
    TrainingProgress,
    TrainingRequest,
)
from loomos.processes import spawn_tied_to_parent
from loomos.settings import Settings
from loomos.temporal.names import CHECKPOINTS_SAVED

LOG_NOT_FOUND = "LogNotFound"
PROGRESS_NOT_FOUND = "ProgressNotFound"
PROGRESS_SUFFIX = ".progress.jsonl"

# Job ids are validated upstream; this stricter check keeps a path built from one inside its
# folder whatever reaches the activity.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Marks every process of an attempt (inherited through fork/exec), so processes that left
# torchrun's process tree (workers run in their own sessions; orphans get re-parented) are
# still found and killed.
ENV_RUN_TOKEN = "LOOMOS_RUN_TOKEN"

PROCESS_POLL_S = 0.1
# Once a rank has failed, how long the other ranks get to exit on their own (torchrun's SIGTERM)
# before they are killed; capped by the node's cancel grace.
STRAGGLER_GRACE_S = 10.0
HEARTBEAT_EVERY_S = 0.5
# The job workflow hears of new checkpoints at once, then at most this often (each notice is a
# signal in its history, and a days-long job must stay far below Temporal's history limits).
CHECKPOINT_NOTICE_EVERY_S = 60.0
TAIL_LINES = 20
TAIL_SCAN_BYTES = 256 * 1024
# Heartbeats and results must stay small (Temporal warns at 256 KB): keep the newest entries.
MAX_CHECKPOINTS_REPORTED = 32
MAX_METRICS = 32

OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "torch.OutOfMemoryError", "Cannot allocate memory")

# torchrun's failure summary: one block per failed rank.
_FAILURE_BLOCK = re.compile(
    r"^\s*rank\s*:\s*(?P<rank>\d+)\s+\(local_rank:\s*(?P<local>\d+)\)\s*\n"
    r"\s*exitcode\s*:\s*(?P<code>-?\d+)\s+\(pid:\s*(?P<pid>\d+)\)",
    re.MULTILINE,
)
_ROOT_CAUSE = "Root Cause (first observed failure):"


def _ensure_safe_id(kind: str, value: str) -> None:
    if not _SAFE_ID.match(value) or ".." in value:
        raise ApplicationError(
            f"{kind} {value!r} is not a safe identifier",
            type=FailureKind.INVALID_JOB.value,
            non_retryable=True,
        )


def attempt_log_path(logs_root: str | Path, job_id: str, attempt: int, node_rank: int) -> Path:
    return Path(logs_root) / job_id / f"attempt-{attempt}-node-{node_rank}.log"


def attempt_progress_path(logs_root: str | Path, job_id: str, attempt: int, node_rank: int) -> Path:
    return Path(logs_root) / job_id / f"attempt-{attempt}-node-{node_rank}{PROGRESS_SUFFIX}"


# --- the progress channel, read side --------------------------------------------------------


class CheckpointNotifier:
    """Tells the job workflow about checkpoints as rank 0 writes them (signal `checkpoints_saved`).

    Best effort: a notice that cannot be delivered is logged and training goes on; what the
    workflow missed still reaches it with the attempt's result.
    """

    def __init__(self, req: TrainingRequest, node_id: str, log: Any) -> None:
        self.req = req
        self.node_id = node_id
        self.log = log
        self.sent: set[int] = set()
        self._last_sent = -math.inf
        self._tasks: set[asyncio.Task[None]] = set()
        try:
            self._handle: Any = activity.client().get_workflow_handle(req.workflow_id)
        except RuntimeError:  # run outside a worker (a test's ActivityEnvironment without a client)
            self._handle = None

    def poll(self, progress: TrainingProgress, force: bool = False) -> None:
        if self._handle is None or self.req.node_rank != 0:  # only rank 0's node writes them
            return
        now = time.monotonic()
        if not force and now - self._last_sent < CHECKPOINT_NOTICE_EVERY_S:
            return
        new = [c for c in progress.checkpoints if c.step not in self.sent]
        if not new:
            return
        self.sent.update(c.step for c in new)
        self._last_sent = now
        notice = CheckpointsSaved(attempt=self.req.attempt, node_id=self.node_id, checkpoints=new)
        task = asyncio.create_task(self._send(notice))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, notice: CheckpointsSaved) -> None:
        try:
            await self._handle.signal(CHECKPOINTS_SAVED, notice)
        except Exception as err:
            self.log.warning("checkpoint notice not delivered", error=str(err))

    def close(self) -> None:
        """Drop notices still in flight: the attempt's result carries every checkpoint anyway."""
        for task in self._tasks:
            task.cancel()


@dataclass
class ProgressReader:
    """Follows the JSON-lines progress file and folds it into a TrainingProgress."""

    path: Path
    progress: TrainingProgress
    _offset: int = 0
    _partial: bytes = b""
    bad_lines: int = 0
    _all_checkpoints: list[CheckpointRef] = field(default_factory=list)

    def poll(self) -> bool:
        """Read lines appended since the last call; True when something changed."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return False
        if not chunk:
            return False
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for its newline
        changed = False
        for line in lines:
            if line.strip():
                changed |= self._apply(line)
        if changed:
            self.progress.updated_at = datetime.now(UTC)
        return changed

    def _apply(self, line: bytes) -> bool:
        try:
            event = json.loads(line)
            kind = event["event"]
            step = int(event["step"])
        except (ValueError, KeyError, TypeError):
            self.bad_lines += 1
            return False
        p = self.progress
        if kind == contract.EVENT_PROGRESS:
            p.step = step
            if event.get("total_steps") is not None:
                p.total_steps = int(event["total_steps"])
            if isinstance(event.get("metrics"), dict):
                p.metrics = _small_metrics(event["metrics"])
        elif kind == contract.EVENT_CHECKPOINT:
            ref = CheckpointRef(
                step=step,
                uri=str(event.get("uri", "")),
                saved_at=_timestamp(event.get("time")),
                metrics=_small_metrics(event.get("metrics") or {}),
            )
            self._all_checkpoints.append(ref)
            p.checkpoints = self._all_checkpoints[-MAX_CHECKPOINTS_REPORTED:]
            p.last_checkpoint = ref
            p.step = max(p.step or 0, step)
        elif kind == contract.EVENT_RESUMED:
            p.resumed_from_step = step
            if p.last_checkpoint is None and event.get("uri"):
                p.last_checkpoint = CheckpointRef(step=step, uri=str(event["uri"]))
            if p.step is None:
                p.step = step
        else:
            self.bad_lines += 1
            return False
        return True


def _small_metrics(raw: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    if not isinstance(raw, dict):
        return out
    for key, value in list(raw.items())[:MAX_METRICS]:
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[str(key)[:64]] = float(value)
    return out


def _timestamp(raw: Any) -> datetime | None:
    if isinstance(raw, int | float):
        return datetime.fromtimestamp(raw, UTC)
    return None


class LauncherFailureWatcher:
    """Notices torchrun starting to close the other ranks after one failed: its own log record
    "Sending process N closing signal SIGTERM". Reads only what was appended since the last call.
    Best effort: if torchrun words it differently, its own 30 s wait applies."""

    def __init__(self, path: Path, offset: int, launcher_pid: int) -> None:
        self.path = path
        self.offset = offset
        self.pattern = re.compile(
            rf"^[WI]\d{{4}} [\d:.]+ +{launcher_pid} .*\] Sending process \d+ closing signal"
        )
        self._partial = b""

    def poll(self) -> bool:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(4 * 1024 * 1024)
        except OSError:
            return False
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()[-4096:]  # a record line is short; never buffer a huge line
        return any(self.pattern.match(line.decode("utf-8", errors="replace")) for line in lines)


# --- processes ------------------------------------------------------------------------------


def _proc_table() -> dict[int, int]:
    """pid -> parent pid of every live (non-zombie) process, from /proc."""
    table: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: parse after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) < 2 or fields[0] == b"Z":
            continue
        table[int(entry)] = int(fields[1])
    return table


def attempt_processes(token: str, root_pid: int | None = None) -> set[int]:
    """Live processes carrying this attempt's token, plus descendants of root_pid."""
    table = _proc_table()
    needle = f"{ENV_RUN_TOKEN}={token}\0".encode()
    found: set[int] = set()
    own = os.getpid()
    for pid in table:
        if pid == own:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle in fh.read():
                    found.add(pid)
        except OSError:
            continue
    if root_pid is not None:
        children: dict[int, list[int]] = {}
        for pid, ppid in table.items():
            children.setdefault(ppid, []).append(pid)
        stack = [root_pid]
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        if root_pid in table:
            found.add(root_pid)
    return found


def _signal_all(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[:1] != [b"Z"]  # a zombie has already exited


async def _wait_gone(pids: set[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _oom_kill_count() -> int | None:
    """The kernel's count of OOM kills for this cgroup (v2 or v1) or host-wide; None if unknown."""
    candidates: list[Path] = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hier, _, rest = line.partition(":")
            controllers, _, cg_path = rest.partition(":")
            if hier == "0" and controllers == "":
                candidates += [Path("/sys/fs/cgroup") / cg_path.lstrip("/") / "memory.events"]
            elif "memory" in controllers.split(","):
                candidates += [Path("/sys/fs/cgroup/memory") / cg_path.lstrip("/") / "memory.oom_control"]
    except OSError:
        pass
    candidates += [
        Path("/sys/fs/cgroup/memory.events"),
        Path("/sys/fs/cgroup/memory/memory.oom_control"),
        Path("/proc/vmstat"),
    ]
    for path in candidates:
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value)
        except OSError:
            continue
    return None


# --- failure classification -----------------------------------------------------------------


@dataclass(frozen=True)
class RankFailure:
    rank: int
    local_rank: int
    exitcode: int
    root_cause: bool


def parse_torchrun_failures(log_text: str) -> list[RankFailure]:
    """Per-rank exit codes from torchrun's failure summary (the last one in the text)."""
    start = log_text.rfind("ChildFailedError")
    if start < 0:
        return []
    summary = log_text[start:]
    root_at = summary.find(_ROOT_CAUSE)
    out = []
    for m in _FAILURE_BLOCK.finditer(summary):
        out.append(
            RankFailure(
                rank=int(m.group("rank")),
                local_rank=int(m.group("local")),
                exitcode=int(m.group("code")),
                root_cause=root_at >= 0 and m.start() > root_at,
            )
        )
    return out


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def classify_failure(
    failures: list[RankFailure], launcher_code: int, log_tail: str, oom_killed: bool | None
) -> tuple[FailureKind, str]:
    """FailureKind and a one-line reason for a non-zero exit.

    oom_killed: whether the kernel's OOM-kill counter rose during the attempt (None: unknown,
    in which case a SIGKILL is taken as the OOM killer's, the usual cause on a training node).
    """
    codes = [f.exitcode for f in failures] or [launcher_code]
    root = next((f for f in failures if f.root_cause), failures[0] if failures else None)
    if root is not None:
        reason = f"rank {root.rank} (local rank {root.local_rank}) {_describe_exit(root.exitcode)}"
        others = [f for f in failures if f is not root]
        if others:
            reason += "; then " + ", ".join(f"rank {f.rank} {_describe_exit(f.exitcode)}" for f in others)
    else:
        reason = f"torchrun {_describe_exit(launcher_code)}"
    if 2 in codes:
        return FailureKind.INVALID_ARGUMENTS, reason + " (exit code 2: the script rejected its arguments)"
    if any(marker in log_tail for marker in OOM_MARKERS):
        return FailureKind.RESOURCE_EXHAUSTED, reason + " (out of memory)"
    # Only the first failure counts here: ranks torchrun SIGKILLs after its shutdown timeout
    # (a peer stuck in an NCCL collective) are a consequence, not an OOM kill.
    first_code = root.exitcode if root is not None else launcher_code
    if first_code in (-signal.SIGKILL, 128 + signal.SIGKILL) and oom_killed is not False:
        return FailureKind.RESOURCE_EXHAUSTED, reason + " (SIGKILL: out of memory)"
    return FailureKind.TRAINING_CRASHED, reason


_GLOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +(?P<pid>\d+) ")


def read_tail(path: Path, max_bytes: int) -> tuple[str, int]:
    """The last max_bytes of a file as text, and the file's size."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - max_bytes))
        return fh.read().decode("utf-8", errors="replace"), size


def log_excerpt(text: str, launcher_pid: int, root_rank: int | None, lines: int = TAIL_LINES) -> str:
    """The script's last lines, without torchrun's own traceback, summary and log records.

    If the failing rank's tagged lines ("[rankN]: ...") fall outside the tail (other ranks
    complaining about the lost peer come last), its last lines are shown first.
    """
    cut = text.rfind("ChildFailedError")
    if cut >= 0:
        tb = text.rfind("Traceback (most recent call last):", 0, cut)
        text = text[: tb if tb >= 0 else cut]
    kept = []
    for line in text.splitlines():
        m = _GLOG_LINE.match(line)
        if m and int(m.group("pid")) == launcher_pid:
            continue
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    if root_rank is not None:
        tag = f"[rank{root_rank}]:"
        tagged = [line for line in kept if line.startswith(tag)]
        if tagged:
            rest = [line for line in kept if not line.startswith(tag)]
            head = tagged[-(lines // 2) :]
            return "\n".join([*head, "--- other output ---", *rest[-lines:]])
    return "\n".join(kept[-lines:])


# --- the activities -------------------------------------------------------------------------


def _invalid_job(message: str, progress: TrainingProgress | None = None) -> ApplicationError:
    details = [progress] if progress is not None else []
    return ApplicationError(message, *details, type=FailureKind.INVALID_JOB.value, non_retryable=True)


def _checkpoint_location(req: TrainingRequest, settings: Settings) -> str:
    """LOOMOS_CHECKPOINT_DIR: a local directory (from a path or file:// URI) or an s3:// URI."""
    uri = req.checkpoint_uri or str(Path(settings.checkpoints.root) / req.job_id)
    if uri.startswith("s3://"):
        bucket = uri.removeprefix("s3://").split("/", 1)[0]
        if not bucket:
            raise ValueError(f"checkpoint URI {uri!r} names no bucket")
        return uri
    try:
        store = contract.open_store(uri)
    except ValueError as exc:
        raise ValueError(f"checkpoint URI: {exc}") from None
    assert isinstance(store, contract.LocalCheckpointStore)
    return str(store.directory)


class TrainingActivities:
    """Training activities of one node worker.

    Register the methods on the node's task queue::

        acts = TrainingActivities(settings, node_id)
        Worker(client, task_queue=node_task_queue(node_id),
               activities=[acts.run_training, acts.read_training_log, acts.read_training_progress], ...)
    """

    def __init__(self, settings: Settings, node_id: str) -> None:
        self.settings = settings
        self.node_id = node_id

    # -- run_training ---------------------------------------------------------------------

    @activity.defn(name="run_training")
    async def run_training(self, req: TrainingRequest) -> TrainingProgress:
        """Run torchrun for this node's ranks; heartbeat progress; return it on exit code 0."""
        log = structlog.get_logger().bind(
            job_id=req.job_id, workflow_id=req.workflow_id, attempt=req.attempt,
            node_id=self.node_id, node_rank=req.node_rank,
        )
        _ensure_safe_id("job id", req.job_id)
        log_path = attempt_log_path(self.settings.logs.root, req.job_id, req.attempt, req.node_rank)
        progress = TrainingProgress(attempt=req.attempt, node_id=self.node_id, log_path=str(log_path))
        self._validate(req, progress)
        try:
            ckpt_dir = _checkpoint_location(req, self.settings)
        except ValueError as exc:
            raise _invalid_job(str(exc), progress) from None

        progress_path = attempt_progress_path(self.settings.logs.root, req.job_id, req.attempt, req.node_rank)
        token = uuid.uuid4().hex
        env = self._environment(req, ckpt_dir, progress_path, token)
        cmd = self._command(req)
        assert req.spec.working_directory is not None

        oom_before = _oom_kill_count()
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            if not ckpt_dir.startswith("s3://"):
                Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
            progress_path.unlink(missing_ok=True)  # a re-run of the same attempt starts afresh
            with open(log_path, "ab") as log_file:
                log_file.write(
                    f"=== loomos: job {req.job_id} attempt {req.attempt} node {self.node_id} "
                    f"(node rank {req.node_rank}/{req.nnodes}) at {datetime.now(UTC).isoformat()}\n"
                    f"=== {' '.join(cmd)}\n".encode()
                )
                log_file.flush()
                run_start = log_file.tell()  # a re-run of the attempt appends: judge only this run
                # Synchronous on purpose: a cancellation landing in an await here could lose the
                # handle of a process that was started anyway.
                proc = _spawn(cmd, req.spec.working_directory, env, log_file)
        except OSError as exc:
            # A node-side problem (disk full, permissions, a directory removed meanwhile):
            # another node or a later attempt may well succeed.
            log.warning("could not start the attempt", error=str(exc))
            raise ApplicationError(
                f"node {self.node_id} could not start the attempt: {exc}", progress,
                type=FailureKind.TRAINING_CRASHED.value,
            ) from None
        log.info("training started", pid=proc.pid, log_path=str(log_path), checkpoint_dir=ckpt_dir)
        reader = ProgressReader(progress_path, progress)
        notifier = CheckpointNotifier(req, self.node_id, log)

        watcher = LauncherFailureWatcher(log_path, run_start, proc.pid)
        straggler_grace = min(STRAGGLER_GRACE_S, self.settings.node.cancel_grace_s)
        try:
            last_beat = 0.0
            failure_seen_at: float | None = None
            stragglers_killed = False
            while proc.poll() is None:
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT_EVERY_S:
                    reader.poll()
                    activity.heartbeat(progress.model_copy())
                    notifier.poll(progress)
                    last_beat = now
                    if failure_seen_at is None and watcher.poll():
                        failure_seen_at = now
                if (failure_seen_at is not None and not stragglers_killed
                        and now - failure_seen_at >= straggler_grace):
                    stragglers_killed = True
                    await self._kill_stragglers(proc, token, log)
                await asyncio.sleep(PROCESS_POLL_S)
        except asyncio.CancelledError:
            log.info("cancel requested: stopping training", grace_s=self.settings.node.cancel_grace_s)
            await self._stop_uncancellable(proc, token, log)
            reader.poll()
            progress.exit_code = proc.returncode
            progress.updated_at = datetime.now(UTC)
            # The last details Temporal holds for this attempt: where the stop checkpoint is.
            activity.heartbeat(progress.model_copy())
            log.info("training stopped after cancel", exit_code=proc.returncode, step=progress.step,
                     last_checkpoint=progress.last_checkpoint.uri if progress.last_checkpoint else None)
            raise
        except BaseException:
            # Anything else (worker shutdown, a bug here): never leave the attempt running.
            await self._stop_uncancellable(proc, token, log)
            raise
        finally:
            notifier.close()
            leftovers = await asyncio.to_thread(attempt_processes, token)
            if leftovers:
                log.warning("killing processes left behind by the attempt", pids=sorted(leftovers))
                _signal_all(leftovers, signal.SIGKILL)
                # SIGKILL is delivered asynchronously: return only once they are gone, so a
                # finished attempt never overlaps the next one on this node's slots.
                await _wait_gone(leftovers, timeout_s=5.0)

        reader.poll()
        progress.exit_code = proc.returncode
        progress.updated_at = datetime.now(UTC)
        if reader.bad_lines:
            log.warning("ignored malformed progress lines", count=reader.bad_lines)
        if proc.returncode == 0:
            log.info("training finished", step=progress.step)
            return progress

        size = log_path.stat().st_size
        text, _ = read_tail(log_path, max(0, min(TAIL_SCAN_BYTES, size - run_start)))
        failures = parse_torchrun_failures(text)
        oom_after = _oom_kill_count()
        oom_killed = None if oom_before is None or oom_after is None else oom_after > oom_before
        kind, reason = classify_failure(failures, proc.returncode, text[-32 * 1024 :], oom_killed)
        root = next((f.rank for f in failures if f.root_cause), None)
        excerpt = log_excerpt(text, proc.pid, root)
        message = f"{reason}\n--- last lines of {log_path} ---\n{excerpt}"
        log.warning("training failed", failure_kind=kind.value, reason=reason, exit_code=proc.returncode)
        raise ApplicationError(
            message, progress, type=kind.value, non_retryable=not kind.retryable_by_default
        )

    def _validate(self, req: TrainingRequest, progress: TrainingProgress) -> None:
        spec = req.spec
        if not 0 <= req.node_rank < req.nnodes:
            raise _invalid_job(f"node_rank {req.node_rank} is not in [0, {req.nnodes})", progress)
        if req.nproc_per_node < 1:
            raise _invalid_job(f"nproc_per_node must be >= 1, got {req.nproc_per_node}", progress)
        if not 0 < req.master_port < 65536:
            raise _invalid_job(f"master_port {req.master_port} is not a TCP port", progress)
        if not spec.working_directory:
            raise _invalid_job(
                "working_directory is not set (load_spec sets it from the spec file)", progress
            )
        wd = Path(spec.working_directory)
        if not wd.is_absolute():
            raise _invalid_job(f"working_directory {wd} must be an absolute path on the node", progress)
        if not wd.is_dir():
            raise _invalid_job(f"working_directory {wd} does not exist on node {self.node_id}", progress)
        if spec.entrypoint:
            script = wd / spec.entrypoint
            if not script.is_file():
                raise _invalid_job(f"entrypoint {script} does not exist on node {self.node_id}", progress)
        elif spec.command and spec.command[0] != "-m":
            program = spec.command[0]
            path = spec.environment_variables.get("PATH", os.environ.get("PATH", ""))
            resolved = shutil.which(program, path=path) if "/" not in program else None
            if resolved is None and not (wd / program).is_file() and not Path(program).is_file():
                raise _invalid_job(f"command {program!r} is not found on node {self.node_id}", progress)

    def _command(self, req: TrainingRequest) -> list[str]:
        cmd = [
            sys.executable, "-m", "torch.distributed.run",
            "--nnodes", str(req.nnodes),
            "--node-rank", str(req.node_rank),
            "--nproc-per-node", str(req.nproc_per_node),
            "--max-restarts", "0",
            # torchrun's own wait between forwarding SIGTERM and SIGKILL (30 s by default) is
            # the node's grace period, so a slow final checkpoint is not cut short at 30 s.
            "--shutdown-timeout", str(max(1, math.ceil(self.settings.node.cancel_grace_s))),
        ]
        if req.nnodes == 1:
            # A free port of its own, so jobs sharing a node never collide on 29500.
            cmd.append("--standalone")
        else:
            cmd += ["--master-addr", req.master_addr, "--master-port", str(req.master_port)]
        return cmd + req.spec.launch_target()

    def _environment(
        self, req: TrainingRequest, ckpt_dir: str, progress_path: Path, token: str
    ) -> dict[str, str]:
        # The node's own environment, minus anything that would confuse torchrun's rendezvous or
        # impersonate another attempt (a node worker itself started under torchrun or LoomOS).
        env = {
            k: v for k, v in os.environ.items()
            if k not in RESERVED_ENV and not k.startswith(("TORCHELASTIC_", "LOOMOS_"))
        }
        env.setdefault("PYTHONUNBUFFERED", "1")  # log lines reach the file before a crash
        env.update(req.spec.environment_variables)
        cc = req.spec.checkpoint_config
        env.update({
            contract.ENV_JOB_ID: req.job_id,
            contract.ENV_ATTEMPT: str(req.attempt),
            contract.ENV_NODE_ID: self.node_id,
            contract.ENV_CHECKPOINT_DIR: ckpt_dir,
            contract.ENV_CHECKPOINT_ENABLED: "1" if cc.enabled else "0",
            contract.ENV_MAX_CHECKPOINTS: str(cc.max_checkpoints),
            contract.ENV_PROGRESS_FILE: str(progress_path),
            ENV_RUN_TOKEN: token,
        })
        if cc.interval_steps is not None:
            env[contract.ENV_CHECKPOINT_INTERVAL_STEPS] = str(cc.interval_steps)
        if cc.interval_minutes is not None:
            env[contract.ENV_CHECKPOINT_INTERVAL_MINUTES] = repr(float(cc.interval_minutes))
        return env

    async def _kill_stragglers(self, proc: Any, token: str, log: Any) -> None:
        """A rank failed and torchrun is waiting for the others: SIGKILL them, not torchrun.

        After a peer's death, NCCL ranks sit in their collective and never run their SIGTERM
        handler, and torchrun waits a fixed 30 s before killing them. The attempt is lost
        either way; torchrun, left alive, still writes its per-rank failure summary.
        """
        ranks = await asyncio.to_thread(attempt_processes, token, proc.pid)
        ranks.discard(proc.pid)
        if ranks and proc.poll() is None:
            log.warning("a rank failed; killing ranks still running", pids=sorted(ranks))
            _signal_all(ranks, signal.SIGKILL)

    async def _stop_uncancellable(self, proc: Any, token: str, log: Any) -> None:
        """_stop() to its end even if more cancellations arrive: the processes must be gone."""
        task = asyncio.ensure_future(self._stop(proc, token, log))
        while True:
            try:
                await asyncio.shield(task)
                return
            except asyncio.CancelledError:
                if task.done():
                    raise

    async def _stop(self, proc: Any, token: str, log: Any) -> None:
        """SIGTERM torchrun (it forwards SIGTERM to the ranks, which checkpoint and exit), wait
        up to cancel_grace_s for every process of the attempt, then SIGKILL what is left."""
        grace = self.settings.node.cancel_grace_s
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        # Plain sleeps, not asyncio.wait_for: this runs while the task is being cancelled.
        while time.monotonic() < deadline:
            if proc.poll() is not None and not await asyncio.to_thread(attempt_processes, token):
                return
            await asyncio.sleep(PROCESS_POLL_S)
        pids = await asyncio.to_thread(attempt_processes, token, proc.pid)
        log.warning("grace period over: killing the attempt", pids=sorted(pids))
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _signal_all(pids, signal.SIGKILL)
        while proc.poll() is None:
            await asyncio.sleep(PROCESS_POLL_S)

    # -- read_training_log ----------------------------------------------------------------

    def _attempt_files(
        self, req: LogsRequest, suffix: str, error_type: str, what: str
    ) -> list[tuple[int, Path]]:
        """(node rank, path) of this node's files of one attempt, e.g. suffix ".log", safely."""
        for kind, value in (("job id", req.job_id), ("node id", req.node_id)):
            if not _SAFE_ID.match(value) or ".." in value:
                raise ApplicationError(f"{kind} {value!r} is not valid", type=error_type, non_retryable=True)
        if req.node_id != self.node_id:
            raise ApplicationError(
                f"{what} of node {req.node_id!r} was asked of node {self.node_id!r}",
                type=error_type, non_retryable=True,
            )
        root = Path(self.settings.logs.root).resolve()
        folder = (root / req.job_id).resolve()
        pattern = re.compile(rf"^attempt-{req.attempt}-node-(\d+){re.escape(suffix)}$")
        files: list[tuple[int, Path]] = []
        if folder.is_relative_to(root) and folder.is_dir():
            for entry in folder.iterdir():
                m = pattern.match(entry.name)
                # resolve(): a symlink planted in the folder must not lead outside the log root.
                if m and entry.is_file() and entry.resolve().is_relative_to(root):
                    files.append((int(m.group(1)), entry))
        if not files:
            raise ApplicationError(
                f"no {what} of job {req.job_id} attempt {req.attempt} on node {self.node_id}",
                type=error_type, non_retryable=True,
            )
        return sorted(files)

    @activity.defn(name="read_training_log")
    async def read_training_log(self, req: LogsRequest) -> LogsResult:
        """Tail of one attempt's log(s) on this node, at most req.tail_bytes of text."""
        files = self._attempt_files(req, ".log", LOG_NOT_FOUND, "log")
        folder = files[0][1].parent
        budget = max(1, req.tail_bytes // len(files))
        parts, total, truncated = [], 0, False
        for node_rank, path in files:
            text, size = await asyncio.to_thread(read_tail, path, budget)
            total += size
            truncated |= size > budget
            parts.append(text if len(files) == 1 else f"==> node rank {node_rank}: {path.name} <==\n{text}")
        text = "\n".join(parts)
        if len(text.encode()) > req.tail_bytes:
            # Headers and replacement characters can push it over; keep the newest bytes.
            text = text.encode()[-req.tail_bytes :].decode("utf-8", errors="ignore")
            truncated = True
        shown = files[0][1] if len(files) == 1 else folder / f"attempt-{req.attempt}-node-*.log"
        return LogsResult(
            job_id=req.job_id, attempt=req.attempt, node_id=self.node_id, path=str(shown),
            text=text, truncated=truncated, size_bytes=total,
        )

    # -- read_training_progress -----------------------------------------------------------

    @activity.defn(name="read_training_progress")
    async def read_training_progress(self, req: LogsRequest) -> TrainingProgress:
        """An attempt's progress as its progress channel on this node recorded it.

        temporalio (1.35) reports a cancelled activity without details, so the checkpoint
        written on SIGTERM cannot travel with the cancellation; a workflow asks for it here
        after the cancelled run_training has completed. req.tail_bytes is not used.
        """
        files = self._attempt_files(req, PROGRESS_SUFFIX, PROGRESS_NOT_FOUND, "progress record")
        # Rank 0 writes the channel, on node rank 0; another node rank's file only says it ran.
        node_rank, path = next(((r, p) for r, p in files if p.stat().st_size > 0), files[0])
        log_path = attempt_log_path(self.settings.logs.root, req.job_id, req.attempt, node_rank)
        progress = TrainingProgress(attempt=req.attempt, node_id=self.node_id, log_path=str(log_path))
        await asyncio.to_thread(ProgressReader(path, progress).poll)
        return progress


def _spawn(cmd: list[str], cwd: str, env: dict[str, str], log_file: Any) -> Any:
    # Its own session (the job's group can be signalled as a whole; signals aimed at the node
    # worker's group do not reach it), and SIGTERM from the kernel if the node worker dies, so
    # a node worker killed with SIGKILL does not leave a job training on a node the scheduler
    # believes free: torchrun forwards the SIGTERM, the ranks checkpoint and exit.
    assert cmd[0] == sys.executable
    return spawn_tied_to_parent(cmd, cwd=cwd, env=env, stdout=log_file)
