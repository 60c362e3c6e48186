"""Starting child processes that cannot outlive the process that started them.

Used by the node worker for torchrun and by `loomos dev` / `loomos demo` for the stack's
services. Each child runs in its own session (signals aimed at the parent's process group,
such as a terminal's Ctrl-C, reach the parent alone, which then stops its children in order),
and on Linux asks the kernel for SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG), so a
parent killed with SIGKILL leaves no orphans behind.

Finding and signalling processes is psutil's job (loomos.activities.training.processes); the
parent-death signal is here because psutil has no way to set it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

# Runs first in the child, then exec()s the real program in place (same pid; the parent-death
# signal survives exec). A small script rather than Popen(preexec_fn=...), which is unsafe in
# a process with threads. The kernel sends the signal when the *thread* that forked the child
# exits, so callers spawn from a long-lived thread (the main thread or the event loop's).
PARENT_DEATH_SHIM = """
import os, signal, sys
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass  # not Linux: no parent-death signal
if os.getppid() != int(sys.argv[1]):
    sys.exit("loomos: the parent process exited before the child started")
os.execv(sys.argv[2], sys.argv[2:])
"""


def spawn_tied_to_parent(
    cmd: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = subprocess.STDOUT,
) -> subprocess.Popen[bytes]:
    """Start `cmd` (cmd[0] an executable path) in its own session, tied to this process's life."""
    launcher = [sys.executable, "-c", PARENT_DEATH_SHIM, str(os.getpid()), *cmd]
    return subprocess.Popen(
        launcher,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
