"""Saved workflow histories replayed against the current workflow code.

A change to JobWorkflow or SchedulerWorkflow that alters the commands they issue for an
existing history breaks every job running when the change is deployed, unless it is behind
`workflow.patched(...)`. These histories (recorded by tests/test_job_workflow.py with
LOOMOS_RECORD_HISTORIES=1) catch such changes before they ship.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from loomos.workflows.job import JobWorkflow
from loomos.workflows.logs import FetchLogsWorkflow
from loomos.workflows.scheduler import SchedulerWorkflow
from tests.helpers import HISTORIES

HISTORY_FILES = sorted(HISTORIES.glob("*.json"))


def replayer() -> Replayer:
    return Replayer(
        workflows=[JobWorkflow, SchedulerWorkflow, FetchLogsWorkflow], data_converter=pydantic_data_converter
    )


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_histories_are_present() -> None:
    names = {p.stem for p in HISTORY_FILES}
    assert {"job-succeeded", "job-retried-twice", "job-cancelled", "job-node-lost", "scheduler"} <= names
    # Histories of code before a patch keep replaying the unpatched branch.
    assert any(n.startswith("before-live-checkpoint-audit--") for n in names)


@pytest.mark.parametrize("path", HISTORY_FILES, ids=[p.stem for p in HISTORY_FILES])
async def test_saved_history_replays(path: Path) -> None:
    await replayer().replay_workflow(load(path))


async def test_a_changed_command_is_caught() -> None:
    """The check can fail: a history whose first activity was another one does not replay."""
    data = json.loads((HISTORIES / "job-succeeded.json").read_text())
    for event in data["events"]:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled:
            scheduled["activityType"]["name"] = "some_other_activity"
            break
    else:
        pytest.fail("the saved history schedules no activity")
    with pytest.raises(NondeterminismError):
        await replayer().replay_workflow(WorkflowHistory.from_json("job-altered", json.dumps(data)))


def test_admission_histories_are_present() -> None:
    """Jobs admitted and rejected by the admission step, and jobs from before it existed."""
    names = {p.stem for p in HISTORY_FILES}
    assert {"job-admitted", "job-rejected"} <= names
    assert {n for n in names if n.startswith("before-admission--")} >= {
        "before-admission--job-succeeded",
        "before-admission--job-cancelled",
    }
    rejected = (HISTORIES / "job-rejected.json").read_text()
    assert '"admit_job"' in rejected and "admission" in rejected  # the activity and its patch marker
