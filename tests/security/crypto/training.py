"""Running the node's training activity for the encrypted-checkpoint tests: real torchrun (2
gloo ranks) under temporalio's ActivityEnvironment, as tests/activities does."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from loomos.activities.training import TrainingActivities
from loomos.models.spec import JobSpec, load_spec
from loomos.models.training import TrainingRequest
from loomos.settings import Settings
from tests.helpers import REPO

DEMO_SPEC = REPO / "examples" / "ddp-demo.yaml"
NODE = "node-crypto"


def encrypting_settings(root: Path, keyring: Path, classification: str = "confidential") -> Settings:
    """A node's settings: its folders under `root`, the examples runnable, this keyring."""
    settings = Settings()
    settings.checkpoints.root = str(root / "checkpoints")
    settings.logs.root = str(root / "logs")
    settings.node.cancel_grace_s = 20
    settings.node.allowed_roots = [str(root), str(REPO)]
    settings.security.crypto.key_file = str(keyring)
    settings.security.crypto.checkpoint_classification = classification  # type: ignore[assignment]
    return settings


def demo_spec(args: list[str], interval_steps: int = 10) -> JobSpec:
    spec = load_spec(DEMO_SPEC)
    spec.args = args
    spec.checkpoint_config.interval_steps = interval_steps
    return spec


def new_job_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def request(job_id: str, spec: JobSpec, attempt: int = 1) -> TrainingRequest:
    return TrainingRequest(
        job_id=job_id, workflow_id=f"job-{job_id}", attempt=attempt, spec=spec, nproc_per_node=2
    )


async def run_training(settings: Settings, req: TrainingRequest) -> Any:
    """The attempt's TrainingProgress, or the ApplicationError it failed with."""
    acts = TrainingActivities(settings, NODE)
    try:
        return await ActivityEnvironment().run(acts.run_training, req)
    except ApplicationError as exc:
        return exc


def progress_events(settings: Settings, job_id: str, attempt: int) -> list[dict[str, Any]]:
    path = Path(settings.logs.root) / job_id / f"attempt-{attempt}-node-0.progress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def live_processes_of(job_id: str) -> set[int]:
    """Live processes whose environment carries this job id."""
    marker = f"LOOMOS_JOB_ID={job_id}\0".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            if stat[stat.rfind(b")") + 2 :].split()[0] == b"Z":
                continue
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker in fh.read():
                    found.add(int(entry))
        except (OSError, IndexError):
            continue
    return found
