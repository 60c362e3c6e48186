"""The node worker's activities: run one node's share of an attempt, and read its records.

`run_training` starts torchrun for the request's ranks (launch.py), heartbeats the progress
channel the script's rank 0 writes (progress.py), and turns the exit into a result or a
classified ApplicationError the job workflow decides retries on (failures.py). It never runs
inside the training processes. No process of an attempt outlives it (processes.py): a
cancelled activity stops them with SIGTERM (the script saves a checkpoint) and SIGKILL after
the grace period; ranks that hang after a peer failed are killed; leftovers are found by a
per-attempt environment token; and torchrun gets SIGTERM from the kernel if the node worker
itself dies.

`read_training_log` and `read_training_progress` read an attempt's log and progress record on
the node that ran it (records.py: logs and progress files stay on the node).

Each is registered under its name in loomos.temporal.names, with the input and result types of
its stub in loomos.temporal.activities.NodeActivities, which workflows call.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from loomos.activities.training.failures import diagnose
from loomos.activities.training.launch import (
    checkpoint_encryption,
    checkpoint_location,
    invalid_job,
    rank_environment,
    secret_environment,
    torchrun_command,
    validate_request,
)
from loomos.activities.training.oom import oom_kill_count
from loomos.activities.training.processes import (
    PROCESS_POLL_S,
    kill_leftovers,
    kill_stragglers,
    start_attempt,
    stop_attempt_uncancellable,
)
from loomos.activities.training.progress import CheckpointNotifier, LauncherFailureWatcher, ProgressReader
from loomos.activities.training.records import (
    LOG_SUFFIX,
    PROGRESS_SUFFIX,
    attempt_log_path,
    attempt_progress_path,
    find_attempt_files,
    is_safe_id,
    read_tail,
)
from loomos.models.jobs import FailureKind
from loomos.models.training import LogsRequest, LogsResult, ProgressRequest, TrainingProgress, TrainingRequest
from loomos.settings import Settings
from loomos.temporal import names
from loomos.temporal.names import ErrorType

# Once a rank has failed, how long the other ranks get to exit on their own (torchrun's SIGTERM)
# before they are killed; capped by the node's cancel grace.
STRAGGLER_GRACE_S = 10.0
HEARTBEAT_EVERY_S = 0.5
# How much of the end of the run's log a failure is diagnosed from.
TAIL_SCAN_BYTES = 256 * 1024


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

    @activity.defn(name=names.RUN_TRAINING)
    async def run_training(self, req: TrainingRequest) -> TrainingProgress:
        """Run torchrun for this node's ranks; heartbeat progress; return it on exit code 0."""
        log = structlog.get_logger().bind(
            job_id=req.job_id, workflow_id=req.workflow_id, attempt=req.attempt,
            node_id=self.node_id, node_rank=req.node_rank,
        )
        if not is_safe_id(req.job_id):
            raise invalid_job(f"job id {req.job_id!r} is not a safe identifier")
        logs_root = self.settings.logs.root
        log_path = attempt_log_path(logs_root, req.job_id, req.attempt, req.node_rank)
        progress = TrainingProgress(attempt=req.attempt, node_id=self.node_id, log_path=str(log_path))
        validate_request(req, self.node_id, progress, self.settings.node)
        try:
            ckpt_dir = checkpoint_location(req, self.settings)
            sealing = checkpoint_encryption(req, self.settings.security.crypto)
            secrets = secret_environment(req, self.settings.security.crypto)
        except ValueError as exc:
            raise invalid_job(str(exc), progress) from None

        progress_path = attempt_progress_path(logs_root, req.job_id, req.attempt, req.node_rank)
        token = uuid.uuid4().hex
        env = rank_environment(req, self.node_id, ckpt_dir, progress_path, token) | sealing | secrets
        cmd = torchrun_command(req, self.settings.node.cancel_grace_s)
        assert req.spec.working_directory is not None

        oom_before = oom_kill_count()
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
                proc = start_attempt(cmd, req.spec.working_directory, env, log_file)
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
        grace_s = self.settings.node.cancel_grace_s
        try:
            await self._supervise(proc, token, reader, notifier, log_path, run_start, log)
        except asyncio.CancelledError:
            log.info("cancel requested: stopping training", grace_s=grace_s)
            await stop_attempt_uncancellable(proc, token, grace_s, log)
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
            await stop_attempt_uncancellable(proc, token, grace_s, log)
            raise
        finally:
            notifier.close()
            await kill_leftovers(token, log)

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
        oom_after = oom_kill_count()
        oom_killed = None if oom_before is None or oom_after is None else oom_after > oom_before
        found = diagnose(text, proc.returncode, proc.pid, oom_killed)
        message = f"{found.reason}\n--- last lines of {log_path} ---\n{found.excerpt}"
        log.warning("training failed", failure_kind=found.kind.value, reason=found.reason,
                    exit_code=proc.returncode)
        raise ApplicationError(
            message, progress, type=found.kind.value, non_retryable=not found.kind.retryable_by_default
        )

    async def _supervise(
        self, proc: subprocess.Popen[bytes], token: str, reader: ProgressReader,
        notifier: CheckpointNotifier, log_path: Path, run_start: int, log: Any,
    ) -> None:
        """Until torchrun exits: heartbeat progress, notify checkpoints, and once a rank has
        failed, kill the ranks still running after the straggler grace."""
        watcher = LauncherFailureWatcher(log_path, run_start, proc.pid)
        straggler_grace = min(STRAGGLER_GRACE_S, self.settings.node.cancel_grace_s)
        last_beat = 0.0
        failure_seen_at: float | None = None
        stragglers_killed = False
        while proc.poll() is None:
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_EVERY_S:
                reader.poll()
                activity.heartbeat(reader.progress.model_copy())
                notifier.poll(reader.progress)
                last_beat = now
                if failure_seen_at is None and watcher.poll():
                    failure_seen_at = now
            if (failure_seen_at is not None and not stragglers_killed
                    and now - failure_seen_at >= straggler_grace):
                stragglers_killed = True
                await kill_stragglers(proc, token, log)
            await asyncio.sleep(PROCESS_POLL_S)

    # -- read_training_log and read_training_progress --------------------------------------

    def _attempt_files(
        self, req: ProgressRequest, suffix: str, error_type: ErrorType, what: str
    ) -> list[tuple[int, Path]]:
        """(node rank, path) of this node's files of one attempt, e.g. suffix ".log", safely."""
        for kind, value in (("job id", req.job_id), ("node id", req.node_id)):
            if not is_safe_id(value):
                raise ApplicationError(
                    f"{kind} {value!r} is not valid", type=error_type.value, non_retryable=True
                )
        if req.node_id != self.node_id:
            raise ApplicationError(
                f"{what} of node {req.node_id!r} was asked of node {self.node_id!r}",
                type=error_type.value, non_retryable=True,
            )
        files = find_attempt_files(self.settings.logs.root, req.job_id, req.attempt, suffix)
        if not files:
            raise ApplicationError(
                f"no {what} of job {req.job_id} attempt {req.attempt} on node {self.node_id}",
                type=error_type.value, non_retryable=True,
            )
        return files

    @activity.defn(name=names.READ_TRAINING_LOG)
    async def read_training_log(self, req: LogsRequest) -> LogsResult:
        """Tail of one attempt's log(s) on this node, at most req.tail_bytes of text."""
        files = self._attempt_files(req, LOG_SUFFIX, ErrorType.LOG_NOT_FOUND, "log")
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
        shown = files[0][1] if len(files) == 1 else folder / f"attempt-{req.attempt}-node-*{LOG_SUFFIX}"
        return LogsResult(
            job_id=req.job_id, attempt=req.attempt, node_id=self.node_id, path=str(shown),
            text=text, truncated=truncated, size_bytes=total,
        )

    @activity.defn(name=names.READ_TRAINING_PROGRESS)
    async def read_training_progress(self, req: ProgressRequest) -> TrainingProgress:
        """An attempt's progress as its progress channel on this node recorded it.

        temporalio (1.35) reports a cancelled activity without details, so the checkpoint
        written on SIGTERM cannot travel with the cancellation; a workflow asks for it here
        after the cancelled run_training has completed. Workflows started before this took a
        ProgressRequest send a LogsRequest: its tail_bytes is ignored (pydantic drops unknown
        fields), so those keep working.
        """
        files = self._attempt_files(req, PROGRESS_SUFFIX, ErrorType.PROGRESS_NOT_FOUND, "progress record")
        # Rank 0 writes the channel, on node rank 0; another node rank's file only says it ran.
        node_rank, path = next(((r, p) for r, p in files if p.stat().st_size > 0), files[0])
        log_path = attempt_log_path(self.settings.logs.root, req.job_id, req.attempt, node_rank)
        progress = TrainingProgress(attempt=req.attempt, node_id=self.node_id, log_path=str(log_path))
        await asyncio.to_thread(ProgressReader(path, progress).poll)
        return progress
