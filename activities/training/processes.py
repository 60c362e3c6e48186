"""An attempt's processes: starting torchrun, finding every process of the attempt, stopping them.

No process of an attempt outlives run_training. torchrun runs in its own session, tied to the
node worker (loomos.processes.spawn_tied_to_parent: it gets SIGTERM from the kernel if the node
worker dies). Its ranks run in sessions of their own and may start children that leave the
process tree (detached, or re-parented when their parent exits), so every process of an
attempt is marked with a per-attempt token in its environment (inherited through fork/exec)
and found by it. Processes are found and signalled through psutil, which also guards against
signalling a pid that the kernel has meanwhile given to another process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import IO, Any

import psutil

from loomos.processes import spawn_tied_to_parent

# Marks every process of an attempt (inherited through fork/exec), so processes that left
# torchrun's process tree (workers run in their own sessions; orphans get re-parented) are
# still found and killed.
ENV_RUN_TOKEN = "LOOMOS_RUN_TOKEN"

PROCESS_POLL_S = 0.1
# How long a finished attempt waits for its SIGKILLed leftovers to be gone.
LEFTOVER_WAIT_S = 5.0


def start_attempt(
    cmd: list[str], cwd: str, env: dict[str, str], log_file: IO[bytes]
) -> subprocess.Popen[bytes]:
    """Start torchrun (cmd[0] is this interpreter) with stdout and stderr into log_file."""
    # Its own session (the job's group can be signalled as a whole; signals aimed at the node
    # worker's group do not reach it), and SIGTERM from the kernel if the node worker dies, so
    # a node worker killed with SIGKILL does not leave a job training on a node the scheduler
    # believes free: torchrun forwards the SIGTERM, the ranks checkpoint and exit.
    assert cmd[0] == sys.executable
    return spawn_tied_to_parent(cmd, cwd=cwd, env=env, stdout=log_file)


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie has exited; its parent has not reaped it yet, and may
    never: in a container, pid 1 is not always a reaper)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def attempt_processes(token: str, root_pid: int | None = None) -> list[psutil.Process]:
    """Running processes carrying this attempt's token, plus root_pid and its descendants."""
    found: dict[int, psutil.Process] = {}
    own = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == own:
            continue
        try:
            marked = proc.environ().get(ENV_RUN_TOKEN) == token
        except psutil.Error:  # gone meanwhile, a zombie, or another user's process
            continue
        if marked and _running(proc):
            found[proc.pid] = proc
    if root_pid is not None:
        try:
            root = psutil.Process(root_pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for proc in tree:
            if proc.pid not in found and _running(proc):
                found[proc.pid] = proc
    return list(found.values())


def pids(procs: list[psutil.Process]) -> list[int]:
    """For log records."""
    return sorted(p.pid for p in procs)


def signal_all(procs: list[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)  # psutil refuses if the pid now belongs to another process
        except psutil.Error:
            pass


async def wait_gone(procs: list[psutil.Process], timeout_s: float) -> None:
    """Return once none of procs runs any more, or after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while any(_running(p) for p in procs) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal torchrun's process group (its session) while torchrun runs."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


async def kill_stragglers(proc: subprocess.Popen[bytes], token: str, log: Any) -> None:
    """A rank failed and torchrun is waiting for the others: SIGKILL them, not torchrun.

    After a peer's death, NCCL ranks sit in their collective and never run their SIGTERM
    handler, and torchrun waits a fixed 30 s before killing them. The attempt is lost
    either way; torchrun, left alive, still writes its per-rank failure summary.
    """
    ranks = [p for p in await asyncio.to_thread(attempt_processes, token, proc.pid) if p.pid != proc.pid]
    if ranks and proc.poll() is None:
        log.warning("a rank failed; killing ranks still running", pids=pids(ranks))
        signal_all(ranks, signal.SIGKILL)


async def stop_attempt(proc: subprocess.Popen[bytes], token: str, grace_s: float, log: Any) -> None:
    """SIGTERM torchrun (it forwards SIGTERM to the ranks, which checkpoint and exit), wait
    up to grace_s for every process of the attempt, then SIGKILL what is left."""
    _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    # Plain sleeps, not asyncio.wait_for: this runs while the task is being cancelled.
    while time.monotonic() < deadline:
        if proc.poll() is not None and not await asyncio.to_thread(attempt_processes, token):
            return
        await asyncio.sleep(PROCESS_POLL_S)
    left = await asyncio.to_thread(attempt_processes, token, proc.pid)
    log.warning("grace period over: killing the attempt", pids=pids(left))
    _signal_group(proc, signal.SIGKILL)
    signal_all(left, signal.SIGKILL)
    while proc.poll() is None:
        await asyncio.sleep(PROCESS_POLL_S)


async def stop_attempt_uncancellable(
    proc: subprocess.Popen[bytes], token: str, grace_s: float, log: Any
) -> None:
    """stop_attempt() to its end even if more cancellations arrive: the processes must be gone."""
    task = asyncio.ensure_future(stop_attempt(proc, token, grace_s, log))
    while True:
        try:
            await asyncio.shield(task)
            return
        except asyncio.CancelledError:
            if task.done():
                raise


async def kill_leftovers(token: str, log: Any) -> None:
    """SIGKILL whatever still carries the attempt's token once torchrun has exited, and wait
    until it is gone."""
    leftovers = await asyncio.to_thread(attempt_processes, token)
    if leftovers:
        log.warning("killing processes left behind by the attempt", pids=pids(leftovers))
        signal_all(leftovers, signal.SIGKILL)
        # SIGKILL is delivered asynchronously: return only once they are gone, so a
        # finished attempt never overlaps the next one on this node's slots.
        await wait_gone(leftovers, timeout_s=LEFTOVER_WAIT_S)
