"""An attempt's processes found by their environment token, signalled and waited for
(loomos.activities.training.processes), and the OOM-kill counter (oom.py), on this machine's
real processes and on made-up cgroup files."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from loomos.activities.training.oom import oom_kill_count
from loomos.activities.training.processes import (
    ENV_RUN_TOKEN,
    attempt_processes,
    pids,
    signal_all,
    wait_gone,
)

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
# Starts a grandchild in a session of its own, prints its pid, then sleeps.
DETACHING = [sys.executable, "-c", (
    "import subprocess, sys, time\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
    "print(p.pid, flush=True)\n"
    "time.sleep(60)\n"
)]


@pytest.fixture
def started():
    """Start processes with a given run token; kill what is left at the end."""
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], token: str | None, **kwargs) -> subprocess.Popen:
        env = dict(os.environ)
        env.pop(ENV_RUN_TOKEN, None)
        if token is not None:
            env[ENV_RUN_TOKEN] = token
        proc = subprocess.Popen(cmd, env=env, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        for child in _descendants(proc.pid):
            child.kill()
        proc.kill()
        proc.wait()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_processes_are_found_by_their_exact_token(started) -> None:
    token = uuid.uuid4().hex
    mine = started(SLEEP, token)
    started(SLEEP, token[:-1])  # a token that merely starts the same way is another attempt's
    started(SLEEP, token + "0")
    started(SLEEP, None)
    _wait_for(lambda: pids(attempt_processes(token)) == [mine.pid])
    assert attempt_processes(uuid.uuid4().hex) == []


def test_a_detached_grandchild_is_found_by_its_token(started) -> None:
    token = uuid.uuid4().hex
    parent = started(DETACHING, token, stdout=subprocess.PIPE, text=True)
    grandchild = int(parent.stdout.readline())
    _wait_for(lambda: set(pids(attempt_processes(token))) == {parent.pid, grandchild})
    assert psutil.Process(grandchild).ppid() == parent.pid and os.getsid(grandchild) != os.getsid(parent.pid)


def test_descendants_of_the_root_are_found_without_a_token(started) -> None:
    root = started(DETACHING, None, stdout=subprocess.PIPE, text=True)
    grandchild = int(root.stdout.readline())
    token = uuid.uuid4().hex
    assert set(pids(attempt_processes(token, root.pid))) == {root.pid, grandchild}


def test_a_root_that_is_gone_adds_nothing(started) -> None:
    proc = started([sys.executable, "-c", "pass"], None)
    proc.wait()
    assert attempt_processes(uuid.uuid4().hex, proc.pid) == []


def test_zombies_have_exited_and_are_not_running_processes(started) -> None:
    token = uuid.uuid4().hex
    proc = started([sys.executable, "-c", "pass"], token)
    # Not reaped yet: a zombie until wait(), still carrying the token in the process table.
    _wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE)
    assert attempt_processes(token) == []
    assert attempt_processes(token, proc.pid) == []


async def test_signal_all_and_wait_gone(started) -> None:
    token = uuid.uuid4().hex
    procs = [started(SLEEP, token) for _ in range(3)]
    await asyncio.to_thread(_wait_for, lambda: len(attempt_processes(token)) == 3)
    found = attempt_processes(token)
    signal_all(found, signal.SIGKILL)
    await wait_gone(found, timeout_s=10)
    # Killed but not reaped by us, their parent: gone is "not running", zombies included.
    assert attempt_processes(token) == []
    assert all(p.wait(timeout=5) == -signal.SIGKILL for p in procs)
    signal_all(found, signal.SIGKILL)  # signalling processes already gone is no error


async def test_wait_gone_gives_up_after_its_timeout(started) -> None:
    token = uuid.uuid4().hex
    started(SLEEP, token)
    await asyncio.to_thread(_wait_for, lambda: len(attempt_processes(token)) == 1)
    begun = time.monotonic()
    await wait_gone(attempt_processes(token), timeout_s=0.2)
    assert 0.2 <= time.monotonic() - begun < 5
    assert len(attempt_processes(token)) == 1


# --- the OOM-kill counter -------------------------------------------------------------------------


def fake_roots(tmp_path: Path, cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    """/proc and /sys/fs/cgroup stand-ins under tmp_path: files are paths relative to it."""
    proc_root, cgroup_root = tmp_path / "proc", tmp_path / "cgroup"
    (proc_root / "self").mkdir(parents=True)
    cgroup_root.mkdir()
    if cgroup:
        (proc_root / "self" / "cgroup").write_text(cgroup)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return proc_root, cgroup_root


def test_oom_count_of_this_cgroup_v2(tmp_path: Path) -> None:
    roots = fake_roots(tmp_path, "0::/system.slice/node.service\n", {
        "cgroup/system.slice/node.service/memory.events": "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n",
        "cgroup/memory.events": "oom_kill 40\n",  # the root cgroup: not this one's
        "proc/vmstat": "oom_kill 99\n",
    })
    assert oom_kill_count(*roots) == 2


def test_oom_count_of_this_cgroup_v1(tmp_path: Path) -> None:
    roots = fake_roots(tmp_path, "12:cpu,cpuacct:/x\n11:memory:/docker/abc\n", {
        "cgroup/memory/docker/abc/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n",
        "proc/vmstat": "oom_kill 99\n",
    })
    assert oom_kill_count(*roots) == 5


def test_oom_count_falls_back_to_the_host(tmp_path: Path) -> None:
    # No readable cgroup of its own (or none listed): the root cgroup, then the host's count.
    host = fake_roots(tmp_path / "a", "0::/gone\n", {"proc/vmstat": "pgfault 1\noom_kill 7\n"})
    assert oom_kill_count(*host) == 7
    root_cgroup = fake_roots(tmp_path / "b", "", {"cgroup/memory.events": "oom_kill 4\n"})
    assert oom_kill_count(*root_cgroup) == 4


@pytest.mark.parametrize(
    "text", ["", "oom_kill\n", "oom_kill -1\n", "oom_kill lots\n", "\x00\xff garbage\n", "oom_kill=3\n"]
)
def test_oom_count_unknown_when_nothing_readable_says_it(tmp_path: Path, text: str) -> None:
    assert oom_kill_count(*fake_roots(tmp_path, "not a cgroup line\n", {"proc/vmstat": text})) is None


def test_oom_count_on_this_machine_is_a_count_or_unknown() -> None:
    count = oom_kill_count()
    assert count is None or count >= 0
