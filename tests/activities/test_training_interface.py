"""The node worker's activities as workflows see them: the names in loomos.temporal.names, the
input and result types of the stubs in loomos.temporal.activities.NodeActivities, and
read_training_progress answering the LogsRequest that job workflows already in flight send."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment

from loomos.activities.training import TrainingActivities
from loomos.models.training import LogsRequest, ProgressRequest, TrainingProgress
from loomos.settings import Settings
from loomos.temporal import names
from loomos.temporal.activities import NodeActivities

NODE = "node-a"


@pytest.fixture
def acts(tmp_path: Path) -> TrainingActivities:
    settings = Settings()
    settings.logs.root = str(tmp_path / "logs")
    settings.checkpoints.root = str(tmp_path / "checkpoints")
    return TrainingActivities(settings, NODE)


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("run_training", names.RUN_TRAINING),
        ("read_training_log", names.READ_TRAINING_LOG),
        ("read_training_progress", names.READ_TRAINING_PROGRESS),
    ],
)
def test_each_activity_matches_its_stub(acts: TrainingActivities, method: str, name: str) -> None:
    impl = activity._Definition.must_from_callable(getattr(acts, method))
    stub = activity._Definition.must_from_callable(getattr(NodeActivities, method))
    assert impl.name == stub.name == name
    assert (impl.arg_types, impl.ret_type) == (stub.arg_types, stub.ret_type)


def write_progress(acts: TrainingActivities, job_id: str, attempt: int) -> None:
    folder = Path(acts.settings.logs.root) / job_id
    folder.mkdir(parents=True)
    lines = [
        {"event": "progress", "step": 7, "total_steps": 10, "metrics": {"loss": 0.5}},
        {"event": "checkpoint", "step": 7, "uri": "file:///ck/ckpt-00000007.pt", "time": 1.0},
    ]
    (folder / f"attempt-{attempt}-node-0.progress.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines)
    )


async def test_read_training_progress_takes_a_progress_request(acts: TrainingActivities) -> None:
    write_progress(acts, "job-1", 2)
    progress = await ActivityEnvironment().run(
        acts.read_training_progress, ProgressRequest(job_id="job-1", attempt=2, node_id=NODE)
    )
    assert isinstance(progress, TrainingProgress)
    assert (progress.step, progress.total_steps, progress.last_checkpoint.step) == (7, 10, 7)


async def test_a_logs_request_from_a_workflow_in_flight_still_reads_progress(
    acts: TrainingActivities,
) -> None:
    # Workflows started before ProgressRequest existed send a LogsRequest: the worker decodes the
    # payload as the activity's declared input, and the extra tail_bytes is dropped.
    write_progress(acts, "job-1", 1)
    sent = pydantic_data_converter.payload_converter.to_payloads(
        [LogsRequest(job_id="job-1", attempt=1, node_id=NODE, tail_bytes=1024)]
    )
    declared = activity._Definition.must_from_callable(acts.read_training_progress).arg_types
    (received,) = pydantic_data_converter.payload_converter.from_payloads(sent, declared)
    assert type(received) is ProgressRequest
    assert received == ProgressRequest(job_id="job-1", attempt=1, node_id=NODE)
    progress = await ActivityEnvironment().run(acts.read_training_progress, received)
    assert progress.step == 7 and progress.node_id == NODE
