"""Why an attempt failed, from torchrun's exit and its log: pure functions, no I/O.

The job workflow decides retries on the FailureKind found here (a script that rejects its
arguments fails the job at once; an out-of-memory crash may be retried elsewhere), and users
read the reason and the log excerpt in the job's status. torchrun's failure summary names
every failed rank; the first observed failure (the root cause) decides, since the other ranks
usually fail as a consequence: torchrun SIGTERMs them, or they lose their peer mid-collective.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

from loomos.models.jobs import FailureKind

OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "torch.OutOfMemoryError", "Cannot allocate memory")
# Out-of-memory markers count only near the end of the log, where the crash is.
OOM_SCAN_CHARS = 32 * 1024
EXCERPT_LINES = 20

# torchrun's failure summary: one block per failed rank.
_FAILURE_BLOCK = re.compile(
    r"^\s*rank\s*:\s*(?P<rank>\d+)\s+\(local_rank:\s*(?P<local>\d+)\)\s*\n"
    r"\s*exitcode\s*:\s*(?P<code>-?\d+)\s+\(pid:\s*(?P<pid>\d+)\)",
    re.MULTILINE,
)
_ROOT_CAUSE = "Root Cause (first observed failure):"
_SUMMARY_START = "ChildFailedError"
# A glog-style record of torchrun's own ("W1122 22:36:27.702000 8840 file.py:1028] ...").
_GLOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +(?P<pid>\d+) ")


@dataclass(frozen=True)
class RankFailure:
    """One failed rank in torchrun's summary; exitcode < 0 is -(the signal that killed it)."""

    rank: int
    local_rank: int
    exitcode: int
    root_cause: bool


@dataclass(frozen=True)
class Diagnosis:
    """What run_training reports for a failed attempt: the kind, a one-line reason, log lines."""

    kind: FailureKind
    reason: str
    excerpt: str


def parse_torchrun_failures(log_text: str) -> list[RankFailure]:
    """Per-rank exit codes from torchrun's failure summary (the last one in the text)."""
    start = log_text.rfind(_SUMMARY_START)
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


def describe_exit(code: int) -> str:
    """An exit code in words: `exited with code 1`, `killed by SIGKILL`, `killed by signal 99`."""
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

    failures: torchrun's summary (parse_torchrun_failures); launcher_code: torchrun's own exit
    code, used when there is no summary (torchrun itself failed or was killed).
    oom_killed: whether the kernel's OOM-kill counter rose during the attempt (None: unknown,
    in which case a SIGKILL is taken as the OOM killer's, the usual cause on a training node).
    """
    codes = [f.exitcode for f in failures] or [launcher_code]
    root = next((f for f in failures if f.root_cause), failures[0] if failures else None)
    if root is not None:
        reason = f"rank {root.rank} (local rank {root.local_rank}) {describe_exit(root.exitcode)}"
        others = [f for f in failures if f is not root]
        if others:
            reason += "; then " + ", ".join(f"rank {f.rank} {describe_exit(f.exitcode)}" for f in others)
    else:
        reason = f"torchrun {describe_exit(launcher_code)}"
    # argparse exits with 2 on bad arguments: whichever rank says so, retrying cannot help.
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


def log_excerpt(text: str, launcher_pid: int, root_rank: int | None, lines: int = EXCERPT_LINES) -> str:
    """The script's last lines, without torchrun's own traceback, summary and log records.

    If the failing rank's tagged lines ("[rankN]: ...") fall outside the tail (other ranks
    complaining about the lost peer come last), its last lines are shown first.
    """
    cut = text.rfind(_SUMMARY_START)
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


def diagnose(log_text: str, launcher_code: int, launcher_pid: int, oom_killed: bool | None) -> Diagnosis:
    """Everything above for one failed run: log_text is what the run appended to its log."""
    failures = parse_torchrun_failures(log_text)
    kind, reason = classify_failure(failures, launcher_code, log_text[-OOM_SCAN_CHARS:], oom_killed)
    root = next((f.rank for f in failures if f.root_cause), None)
    return Diagnosis(kind, reason, log_excerpt(log_text, launcher_pid, root))
