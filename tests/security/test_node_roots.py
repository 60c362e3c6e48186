"""A node runs jobs only under node.allowed_roots: working directory, script (symlinks resolved),
`command:` programs, and local checkpoint directories. Each refusal is an InvalidJob naming the
path and the setting, raised before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from loomos.activities.training.launch import checkpoint_location, validate_request
from loomos.models.spec import JobSpec
from loomos.models.training import TrainingProgress, TrainingRequest
from loomos.settings import Settings


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    root, outside = tmp_path / "jobs", tmp_path / "elsewhere"
    for folder in (root / "mnist", outside):
        folder.mkdir(parents=True)
    (root / "mnist" / "train.py").write_text("print('hi')\n")
    (outside / "evil.py").write_text("print('pwned')\n")
    (root / "mnist" / "link.py").symlink_to(outside / "evil.py")
    (root / "mnist" / "run.sh").write_text("#!/bin/sh\n")
    return {"root": root, "outside": outside, "wd": root / "mnist"}


def settings_for(layout: dict[str, Path], **node: object) -> Settings:
    s = Settings()
    s.checkpoints.root = str(layout["root"].parent / "node-ckpt")
    s.node.allowed_roots = [str(layout["root"])]
    for key, value in node.items():
        setattr(s.node, key, value)
    return s


def check(spec: JobSpec, settings: Settings) -> None:
    req = TrainingRequest(job_id="j1", workflow_id="job-j1", attempt=1, spec=spec, nproc_per_node=1)
    validate_request(req, "n1", TrainingProgress(attempt=1), settings.node)


def refused(spec: JobSpec, settings: Settings) -> str:
    with pytest.raises(ApplicationError) as caught:
        check(spec, settings)
    assert caught.value.type == "InvalidJob" and caught.value.non_retryable
    return caught.value.message


def test_jobs_under_the_roots_run(layout: dict[str, Path]) -> None:
    s = settings_for(layout, allowed_programs=["sh"])
    check(JobSpec(name="ok", entrypoint="train.py", working_directory=str(layout["wd"])), s)
    check(JobSpec(name="ok", command=["-m", "pkg"], working_directory=str(layout["wd"])), s)
    check(JobSpec(name="ok", command=["./run.sh"], working_directory=str(layout["wd"])), s)
    check(JobSpec(name="ok", command=["sh", "run.sh"], working_directory=str(layout["wd"])), s)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (dict(entrypoint="evil.py", working_directory="{outside}"), "working_directory {outside} is outside"),
        (dict(entrypoint="link.py", working_directory="{wd}"), "leads outside node.allowed_roots"),
        (dict(command=["{outside}/evil.py"], working_directory="{wd}"), "is outside node.allowed_roots"),
        (dict(command=["sh", "-c", "id"], working_directory="{wd}"), "not in node.allowed_programs"),
        (dict(command=["no-such-program-xyz"], working_directory="{wd}"), "is not found"),
    ],
)
def test_paths_outside_the_roots_are_refused(layout: dict[str, Path], spec: dict, needle: str) -> None:
    fmt = {k: str(v) for k, v in layout.items()}
    fields = {
        k: ([x.format(**fmt) for x in v] if isinstance(v, list) else v.format(**fmt)) for k, v in spec.items()
    }
    message = refused(JobSpec(name="bad", **fields), settings_for(layout))
    assert needle.format(**fmt) in message, message


def test_a_node_without_roots_runs_nothing(layout: dict[str, Path]) -> None:
    s = settings_for(layout, allowed_roots=[])
    assert "node.allowed_roots is not set" in refused(
        JobSpec(name="x", entrypoint="train.py", working_directory=str(layout["wd"])), s
    )


def test_checkpoints_stay_under_the_roots_or_the_node_root(layout: dict[str, Path]) -> None:
    s = settings_for(layout)
    spec = JobSpec(name="x", entrypoint="train.py", working_directory=str(layout["wd"]))

    def location(uri: str | None) -> str:
        req = TrainingRequest(
            job_id="j1", workflow_id="job-j1", attempt=1, spec=spec, nproc_per_node=1, checkpoint_uri=uri
        )
        return checkpoint_location(req, s)

    assert location(None).startswith(s.checkpoints.root)
    assert location(f"file://{layout['root']}/ckpt/j1") == str(layout["root"] / "ckpt" / "j1")
    assert location("s3://bucket/prefix/j1") == "s3://bucket/prefix/j1"
    with pytest.raises(ValueError, match="outside node.allowed_roots"):
        location(f"file://{layout['outside']}/j1")
    with pytest.raises(ValueError, match="outside node.allowed_roots"):
        location("file:///etc")
