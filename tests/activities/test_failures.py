"""Why an attempt failed: torchrun's failure summary, classification and log excerpt.

Pure functions (loomos.activities.training.failures), so these run without processes. The
summary below is torchrun's real format; the end-to-end cases are in test_training_activity.py.
"""

from __future__ import annotations

import pytest

from loomos.activities.training.failures import (
    Diagnosis,
    RankFailure,
    classify_failure,
    describe_exit,
    diagnose,
    log_excerpt,
    parse_torchrun_failures,
)
from loomos.models.jobs import FailureKind

SUMMARY = """
[rank0]: RuntimeError: Connection closed by peer
W1122 22:36:27.702000 8840 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 8845
E1122 22:36:27.734000 8840 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 1)
Traceback (most recent call last):
  File "/x/torch/distributed/run.py", line 1032, in <module>
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-22_22:36:27
  host      : localhost
  rank      : 2 (local_rank: 0)
  exitcode  : -15 (pid: 8845)  (SIGTERM)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 8845
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-22_22:36:27
  host      : localhost
  rank      : 3 (local_rank: 1)
  exitcode  : 1 (pid: 8846)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""


def test_parse_torchrun_failures() -> None:
    assert parse_torchrun_failures(SUMMARY) == [
        RankFailure(rank=2, local_rank=0, exitcode=-15, root_cause=False),
        RankFailure(rank=3, local_rank=1, exitcode=1, root_cause=True),
    ]
    assert parse_torchrun_failures("rank      : 1 (local_rank: 1)\n  exitcode  : 2 (pid: 1)") == []
    excerpt = log_excerpt(SUMMARY, launcher_pid=8840, root_rank=3)
    assert "Connection closed by peer" in excerpt
    assert "Sending process" not in excerpt and "FAILED" not in excerpt


@pytest.mark.parametrize(
    ("codes", "tail", "oom_killed", "kind"),
    [
        ([1, -15], "", False, FailureKind.TRAINING_CRASHED),
        ([-15, 2], "", False, FailureKind.INVALID_ARGUMENTS),
        ([1], "torch.OutOfMemoryError: CUDA out of memory.", False, FailureKind.RESOURCE_EXHAUSTED),
        ([-9, -15], "", True, FailureKind.RESOURCE_EXHAUSTED),
        ([137], "", None, FailureKind.RESOURCE_EXHAUSTED),
        ([-9], "", False, FailureKind.TRAINING_CRASHED),
        ([1, -9], "", None, FailureKind.TRAINING_CRASHED),  # rank 1 SIGKILLed by torchrun's clean-up
        ([-11], "", None, FailureKind.TRAINING_CRASHED),
    ],
)
def test_classify_failure(codes: list[int], tail: str, oom_killed: bool | None, kind: FailureKind) -> None:
    failures = [RankFailure(rank=i, local_rank=i, exitcode=c, root_cause=i == 0) for i, c in enumerate(codes)]
    assert classify_failure(failures, 1, tail, oom_killed)[0] == kind


def test_classify_failure_without_a_summary_uses_torchrun_exit() -> None:
    kind, reason = classify_failure([], -9, "", None)
    assert kind == FailureKind.RESOURCE_EXHAUSTED and "torchrun killed by SIGKILL" in reason
    assert classify_failure([], 1, "", None)[0] == FailureKind.TRAINING_CRASHED


def failure(rank: int, code: int, root_cause: bool = False) -> RankFailure:
    return RankFailure(rank=rank, local_rank=rank, exitcode=code, root_cause=root_cause)


# --- the summary ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "ChildFailedError",
        "ChildFailedError:\n=====\ngarbage \x00\xff here\nrank: x (local_rank: y)\nexitcode: ?? (pid: ?)\n",
        "ChildFailedError\n  rank      : 1 (local_rank: 1)\n  exitcode  : None (pid: 12)\n",  # no number
        "ChildFailedError\n  rank      : 1 (local_rank: 1)\n",  # cut off before the exit code
        SUMMARY.replace("ChildFailedError", "SomethingElse"),  # no summary at all
    ],
)
def test_no_failures_are_read_from_empty_or_garbled_summaries(text: str) -> None:
    assert parse_torchrun_failures(text) == []


def test_only_the_last_summary_counts() -> None:
    # A re-run attempt appends to the same log: an earlier run's summary is not this run's.
    earlier = SUMMARY.replace("exitcode  : 1 (pid: 8846)", "exitcode  : 2 (pid: 8846)")
    assert [f.exitcode for f in parse_torchrun_failures(earlier + "\n" + SUMMARY)] == [-15, 1]


def test_a_summary_without_a_root_cause_section_marks_no_root_cause() -> None:
    text = SUMMARY.replace("Root Cause (first observed failure):", "")
    failures = parse_torchrun_failures(text)
    assert [(f.rank, f.root_cause) for f in failures] == [(2, False), (3, False)]
    # Without one, the first failure listed stands for the cause.
    assert classify_failure(failures, 1, "", None)[1].startswith("rank 2 (local rank 0) killed by SIGTERM")


# --- exit codes and signals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0, "exited with code 0"),
        (1, "exited with code 1"),
        (2, "exited with code 2"),
        (137, "exited with code 137"),  # 128 + SIGKILL from a shell: an exit code, in words
        (255, "exited with code 255"),
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (-2, "killed by SIGINT"),
        (-11, "killed by SIGSEGV"),
        (-32, "killed by signal 32"),  # no name in Python's signal module
        (-99, "killed by signal 99"),
        (-100000, "killed by signal 100000"),
    ],
)
def test_describe_exit(code: int, words: str) -> None:
    assert describe_exit(code) == words


def test_reason_names_the_root_cause_first_then_its_consequences() -> None:
    failures = [failure(0, -15), failure(1, 1, root_cause=True), failure(2, -9)]
    kind, reason = classify_failure(failures, 1, "", False)
    assert kind == FailureKind.TRAINING_CRASHED
    assert reason == (
        "rank 1 (local rank 1) exited with code 1; then rank 0 killed by SIGTERM, rank 2 killed by SIGKILL"
    )


def test_exit_code_2_of_any_rank_is_invalid_arguments_but_signal_2_is_not() -> None:
    # argparse's exit code, whichever rank reports it, and even if another failed first.
    kind, reason = classify_failure([failure(0, 1, root_cause=True), failure(1, 2)], 1, "", None)
    assert kind == FailureKind.INVALID_ARGUMENTS and "the script rejected its arguments" in reason
    assert classify_failure([], 2, "", None)[0] == FailureKind.INVALID_ARGUMENTS  # torchrun's own usage error
    # SIGINT is signal 2: exit code -2 (or 130 from a shell) is an interrupt, not a bad argument.
    assert classify_failure([failure(0, -2, root_cause=True)], 1, "", None)[0] == FailureKind.TRAINING_CRASHED
    assert classify_failure([], 130, "", None)[0] == FailureKind.TRAINING_CRASHED


@pytest.mark.parametrize(
    ("root_code", "oom_killed", "kind"),
    [
        (-9, None, FailureKind.RESOURCE_EXHAUSTED),  # counter unreadable: SIGKILL is usually the OOM killer
        (-9, True, FailureKind.RESOURCE_EXHAUSTED),
        (-9, False, FailureKind.TRAINING_CRASHED),  # the counter did not move: someone else killed it
        (137, None, FailureKind.RESOURCE_EXHAUSTED),
        (137, False, FailureKind.TRAINING_CRASHED),
        (-15, True, FailureKind.TRAINING_CRASHED),  # an OOM kill elsewhere does not make SIGTERM one
        (-99, None, FailureKind.TRAINING_CRASHED),
        (-100000, True, FailureKind.TRAINING_CRASHED),
    ],
)
def test_sigkill_is_out_of_memory_unless_the_kernel_says_otherwise(
    root_code: int, oom_killed: bool | None, kind: FailureKind
) -> None:
    assert classify_failure([failure(0, root_code, root_cause=True)], 1, "", oom_killed)[0] == kind


def test_a_sigkill_that_follows_another_failure_is_a_consequence() -> None:
    # torchrun SIGKILLs a rank stuck after its peer died: the crash is the peer's.
    failures = [failure(0, -9), failure(1, 1, root_cause=True)]
    assert classify_failure(failures, 1, "", True)[0] == FailureKind.TRAINING_CRASHED


@pytest.mark.parametrize(
    "tail",
    [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "RuntimeError: CUDA out of memory.",
        "torch.cuda.OutOfMemoryError",
        "OSError: [Errno 12] Cannot allocate memory",
    ],
)
def test_out_of_memory_markers(tail: str) -> None:
    kind, reason = classify_failure([failure(0, 1, root_cause=True)], 1, "line\n" + tail, False)
    assert kind == FailureKind.RESOURCE_EXHAUSTED and reason.endswith("(out of memory)")


def test_bad_arguments_win_over_out_of_memory_markers() -> None:
    kind, _ = classify_failure([failure(0, 2, root_cause=True)], 1, "CUDA out of memory", None)
    assert kind == FailureKind.INVALID_ARGUMENTS


def test_no_failure_and_no_summary_is_a_crash_of_torchrun() -> None:
    kind, reason = classify_failure([], 1, "", None)
    assert (kind, reason) == (FailureKind.TRAINING_CRASHED, "torchrun exited with code 1")
    kind, reason = classify_failure([], -99, "", None)
    assert (kind, reason) == (FailureKind.TRAINING_CRASHED, "torchrun killed by signal 99")


# --- the log excerpt ------------------------------------------------------------------------------


def test_excerpt_of_an_empty_or_blank_log_is_empty() -> None:
    assert log_excerpt("", launcher_pid=1, root_rank=None) == ""
    assert log_excerpt("\n  \n\n", launcher_pid=1, root_rank=0) == ""


def test_excerpt_keeps_the_last_lines_and_drops_trailing_blanks() -> None:
    text = "\n".join(f"line {i}" for i in range(100)) + "\n\n\n"
    assert log_excerpt(text, launcher_pid=1, root_rank=None, lines=3) == "line 97\nline 98\nline 99"


def test_excerpt_drops_only_torchruns_own_records() -> None:
    text = (
        "W1122 22:36:27.702000 8840 torch/x.py:1] torchrun's record\n"
        "W1122 22:36:27.702000 9999 torch/y.py:2] the script's own glog line\n"
        "plain output\n"
    )
    excerpt = log_excerpt(text, launcher_pid=8840, root_rank=None)
    assert excerpt.splitlines() == ["W1122 22:36:27.702000 9999 torch/y.py:2] the script's own glog line",
                                    "plain output"]


def test_excerpt_shows_the_root_causes_lines_first_when_others_come_last() -> None:
    peers = [f"[rank0]: lost peer {i}" for i in range(30)]
    text = "\n".join(["[rank1]: ValueError: the actual cause", *peers])
    excerpt = log_excerpt(text, launcher_pid=1, root_rank=1, lines=4).splitlines()
    assert excerpt == ["[rank1]: ValueError: the actual cause", "--- other output ---",
                       "[rank0]: lost peer 26", "[rank0]: lost peer 27", "[rank0]: lost peer 28",
                       "[rank0]: lost peer 29"]
    # A root rank with no tagged lines: just the tail.
    assert log_excerpt(text, launcher_pid=1, root_rank=7, lines=1) == "[rank0]: lost peer 29"


def test_excerpt_leaves_out_the_summary_even_without_torchruns_traceback() -> None:
    summary = SUMMARY[SUMMARY.index("torch.distributed.elastic"):]  # the traceback header is gone
    excerpt = log_excerpt("the script's last words\n" + summary, launcher_pid=8840, root_rank=3)
    assert excerpt.startswith("the script's last words")
    assert "FAILED" not in excerpt and "exitcode" not in excerpt and "Root Cause" not in excerpt


# --- all of it at once ----------------------------------------------------------------------------


def test_diagnose_a_real_summary() -> None:
    found = diagnose(SUMMARY, launcher_code=1, launcher_pid=8840, oom_killed=False)
    assert found == Diagnosis(
        kind=FailureKind.TRAINING_CRASHED,
        reason="rank 3 (local rank 1) exited with code 1; then rank 2 killed by SIGTERM",
        excerpt=log_excerpt(SUMMARY, launcher_pid=8840, root_rank=3),
    )


def test_diagnose_looks_for_out_of_memory_only_near_the_end() -> None:
    old = "CUDA out of memory (an earlier, recovered failure)\n" + "x" * 40_000 + "\n"
    assert diagnose(old + "crash\n", 1, 1, None).kind == FailureKind.TRAINING_CRASHED
    assert diagnose("x\n" * 10 + "CUDA out of memory\n", 1, 1, None).kind == FailureKind.RESOURCE_EXHAUSTED


def test_diagnose_an_empty_log() -> None:
    found = diagnose("", launcher_code=-9, launcher_pid=1, oom_killed=None)
    reason = "torchrun killed by SIGKILL (SIGKILL: out of memory)"
    assert found == Diagnosis(FailureKind.RESOURCE_EXHAUSTED, reason, "")
