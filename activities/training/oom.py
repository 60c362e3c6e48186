"""The kernel's count of OOM kills, read before and after an attempt.

A rank killed with SIGKILL was most likely killed by the kernel's OOM killer, but torchrun
also SIGKILLs ranks that ignore its SIGTERM, and so does a person. When the count rose during
the attempt it was the OOM killer; when it did not, it was not; when it cannot be read, the
classification falls back to the usual cause (see failures.classify_failure).

Read from files: psutil has no view of cgroup memory events.
"""

from __future__ import annotations

from pathlib import Path

PROC_ROOT = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def oom_kill_count(proc_root: Path = PROC_ROOT, cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """The kernel's count of OOM kills for this cgroup (v2 or v1) or host-wide; None if unknown.

    The roots are parameters for tests; the node worker reads the real ones.
    """
    candidates: list[Path] = []
    try:
        for line in (proc_root / "self" / "cgroup").read_text().splitlines():
            hier, _, rest = line.partition(":")
            controllers, _, cg_path = rest.partition(":")
            if hier == "0" and controllers == "":
                candidates += [cgroup_root / cg_path.lstrip("/") / "memory.events"]
            elif "memory" in controllers.split(","):
                candidates += [cgroup_root / "memory" / cg_path.lstrip("/") / "memory.oom_control"]
    except OSError:
        pass
    candidates += [
        cgroup_root / "memory.events",
        cgroup_root / "memory" / "memory.oom_control",
        proc_root / "vmstat",
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
