"""Encrypted checkpoints (checkpoint_config.encryption_enabled).

In this process, through loomos.train's own functions with the contract's variables set: what
lies on disk (local and s3:// stores), what is skipped like a corrupt file (tampered, renamed,
another job's, plaintext), and what is an error (no key). Then real torchrun runs (2 gloo ranks)
through the node's training activity: the key reaches the ranks by reference, and a crashed
attempt resumes from an encrypted checkpoint, a tampered newest one skipped.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from moto import mock_aws
from temporalio.exceptions import ApplicationError

from loomos import train as loom
from loomos.models.jobs import FailureKind
from loomos.models.spec import JobSpec
from loomos.models.training import TrainingProgress
from loomos.security.crypto.errors import KeyUnavailable
from loomos.security.crypto.header import MAGIC, read_header
from loomos.security.crypto.keys import open_key_provider
from loomos.train import contract
from tests.security.crypto.training import (
    demo_spec,
    encrypting_settings,
    live_processes_of,
    new_job_id,
    progress_events,
    request,
    run_training,
)

CONTRACT = [
    contract.ENV_JOB_ID, contract.ENV_ATTEMPT, contract.ENV_CHECKPOINT_DIR, contract.ENV_PROGRESS_FILE,
    contract.ENV_CHECKPOINT_ENCRYPTION, contract.ENV_KEY_PROVIDER, contract.ENV_KEY_FILE,
    contract.ENV_KMS_KEY_ID, contract.ENV_KMS_REGION, contract.ENV_KMS_ENDPOINT,
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
]  # fmt: skip
MARKER = torch.arange(4096, dtype=torch.float64) * 3.25  # bytes that would show in plaintext


@pytest.fixture
def as_a_rank(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Set the contract as the node does, then reset loomos.train to read it."""
    for name in CONTRACT:
        monkeypatch.delenv(name, raising=False)
    previous = signal.getsignal(signal.SIGTERM)

    def configure(job_id: str = "job-1", checkpoint_dir: str | None = None, **variables: str) -> Path:
        for name in CONTRACT:
            monkeypatch.delenv(name, raising=False)
        ckpt = Path(checkpoint_dir) if checkpoint_dir else tmp_path / "ckpt"
        monkeypatch.setenv(contract.ENV_JOB_ID, job_id)
        monkeypatch.setenv(contract.ENV_CHECKPOINT_DIR, checkpoint_dir or str(ckpt))
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        loom.reset()
        return ckpt

    yield configure
    loom.reset()
    signal.signal(signal.SIGTERM, previous)


def sealed_env(keyring: Path, classification: str = "confidential") -> dict[str, str]:
    return {
        contract.ENV_CHECKPOINT_ENCRYPTION: classification,
        contract.ENV_KEY_PROVIDER: "local",
        contract.ENV_KEY_FILE: str(keyring),
    }


def state(step: int) -> dict[str, Any]:
    return {"marker": MARKER, "weights": torch.full((8,), float(step))}


def test_rank_0_writes_sealed_checkpoints_and_every_rank_reads_them(
    as_a_rank, provider, keyring_path
) -> None:
    ckpt = as_a_rank(**sealed_env(keyring_path))
    for step in (10, 20):
        loom.save_checkpoint(state(step), step)
    stored = (ckpt / "ckpt-00000020.pt").read_bytes()
    assert stored.startswith(MAGIC) and MARKER.numpy().tobytes()[:64] not in stored
    header, _ = read_header(io.BytesIO(stored))
    assert header.key_id == provider.current()[0] and header.algorithm.label == "AES-256-GCM"
    loaded = loom.load_latest_checkpoint()
    assert loaded["step"] == 20 and torch.equal(loaded["marker"], MARKER)

    restricted = as_a_rank(
        job_id="job-r", checkpoint_dir=str(ckpt.parent / "r"), **sealed_env(keyring_path, "restricted")
    )
    loom.save_checkpoint(state(5), 5)
    header, _ = read_header(io.BytesIO((restricted / "ckpt-00000005.pt").read_bytes()))
    assert header.algorithm.label == "ChaCha20-Poly1305"
    assert loom.load_latest_checkpoint()["step"] == 5


def test_tampered_renamed_foreign_and_plaintext_checkpoints_are_skipped(
    as_a_rank, provider, keyring_path, capfd: pytest.CaptureFixture[str]
) -> None:
    ckpt = as_a_rank(**sealed_env(keyring_path))
    for step in (10, 20, 30):
        loom.save_checkpoint(state(step), step)
    newest = ckpt / "ckpt-00000030.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x04  # one flipped bit in the middle of a tensor's chunk
    newest.write_bytes(bytes(data))
    assert loom.load_latest_checkpoint()["step"] == 20
    assert "skipping unreadable checkpoint" in capfd.readouterr().err

    shutil.copy(ckpt / "ckpt-00000020.pt", ckpt / "ckpt-00000040.pt")  # step 20 renamed as step 40
    assert loom.load_latest_checkpoint()["step"] == 20
    assert "does not authenticate for file id 'job-1/ckpt-00000040.pt'" in capfd.readouterr().err

    other = as_a_rank(job_id="job-2", checkpoint_dir=str(ckpt.parent / "other"), **sealed_env(keyring_path))
    loom.save_checkpoint(state(50), 50)
    shutil.copy(other / "ckpt-00000050.pt", ckpt / "ckpt-00000050.pt")  # another job's checkpoint
    torch.save({**state(60), "step": 60}, ckpt / "ckpt-00000060.pt")  # plaintext, put in by hand
    as_a_rank(checkpoint_dir=str(ckpt), **sealed_env(keyring_path))
    assert loom.load_latest_checkpoint()["step"] == 20
    err = capfd.readouterr().err
    assert "ckpt-00000060.pt is not encrypted, and this job's checkpoints must be" in err
    assert "file id 'job-1/ckpt-00000050.pt'" in err


def test_a_missing_key_stops_the_job_instead_of_starting_over(
    as_a_rank, provider, keyring_path, tmp_path
) -> None:
    as_a_rank(**sealed_env(keyring_path))
    loom.save_checkpoint(state(10), 10)
    elsewhere = tmp_path / "elsewhere.json"
    open_key_provider("local", elsewhere).rotate()  # a node with another keyring
    as_a_rank(**sealed_env(elsewhere))
    with pytest.raises(
        KeyUnavailable, match=rf"key id '{provider.current()[0]}'.*not in key file {elsewhere}"
    ):
        loom.load_latest_checkpoint()
    as_a_rank()  # no encryption configured, an encrypted file found: still said, not skipped
    with pytest.raises(KeyUnavailable, match="no key provider"):
        loom.load_latest_checkpoint()


def test_s3_checkpoints_are_sealed_under_a_kms_keyring(as_a_rank, tmp_path: Path, monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="ckpt")
        cmk = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
        keyring = tmp_path / "kms-ring.json"
        open_key_provider("aws-kms", keyring, kms_key_id=cmk, kms_region="us-east-1").rotate()
        kms_env = {
            **sealed_env(keyring),
            contract.ENV_KEY_PROVIDER: "aws-kms",
            contract.ENV_KMS_KEY_ID: cmk,
            contract.ENV_KMS_REGION: "us-east-1",
        }
        as_a_rank(checkpoint_dir="s3://ckpt/jobs/job-1", **kms_env)
        uri = loom.save_checkpoint(state(7), 7)
        assert uri == "s3://ckpt/jobs/job-1/ckpt-00000007.pt"
        stored = s3.get_object(Bucket="ckpt", Key="jobs/job-1/ckpt-00000007.pt")["Body"].read()
        assert stored.startswith(MAGIC) and MARKER.numpy().tobytes()[:64] not in stored
        loaded = loom.load_latest_checkpoint()
        assert loaded["step"] == 7 and torch.equal(loaded["marker"], MARKER)


# --- real torchrun runs through the node's training activity ----------------------------------


@pytest.mark.e2e
async def test_a_crashed_attempt_resumes_from_an_encrypted_checkpoint(
    tmp_path: Path, provider, keyring_path
) -> None:
    settings = encrypting_settings(tmp_path, keyring_path)
    job_id = new_job_id("sealed")
    spec = demo_spec(["--steps", "40", "--crash-at-step", "25", "--crash-rank", "1"])
    spec.checkpoint_config.encryption_enabled = True
    assert "LOOMOS_KEY" not in spec.model_dump_json()  # the spec carries no key, no reference

    err = await run_training(settings, request(job_id, spec, attempt=1))
    assert isinstance(err, ApplicationError) and err.type == FailureKind.TRAINING_CRASHED.value, err
    ckpt_dir = Path(settings.checkpoints.root) / job_id
    files = sorted(ckpt_dir.iterdir())
    assert [p.name for p in files] == ["ckpt-00000010.pt", "ckpt-00000020.pt"]
    for path in files:
        header, _ = read_header(io.BytesIO(path.read_bytes()))
        assert header.key_id == provider.current()[0] and header.algorithm.label == "AES-256-GCM"

    result = await run_training(settings, request(job_id, spec, attempt=2))
    assert isinstance(result, TrainingProgress), result
    assert result.resumed_from_step == 20 and result.step == 40
    resumed = progress_events(settings, job_id, 2)[0]
    assert (resumed["event"], resumed["step"]) == ("resumed", 20)
    assert (ckpt_dir / "ckpt-00000040.pt").read_bytes().startswith(MAGIC)

    # The newest checkpoint tampered with: the next attempt resumes from the one before.
    newest = ckpt_dir / "ckpt-00000040.pt"
    data = bytearray(newest.read_bytes())
    data[-100] ^= 0x01
    newest.write_bytes(bytes(data))
    spec.args = ["--steps", "45"]
    result = await run_training(settings, request(job_id, spec, attempt=3))
    assert isinstance(result, TrainingProgress), result
    assert result.resumed_from_step == 30 and result.step == 45
    log_text = Path(result.log_path).read_text()
    assert "skipping unreadable checkpoint" in log_text and "ckpt-00000040.pt" in log_text
    assert not live_processes_of(job_id)


@pytest.mark.e2e
async def test_the_key_travels_by_reference_only(tmp_path: Path, provider, keyring_path) -> None:
    """The ranks' environment names the keyring, never a key; and a node whose keyring cannot
    serve fails the job before training starts."""
    work = tmp_path / "job"
    work.mkdir()
    (work / "env.py").write_text(
        "import json, os\n"
        "print('ENV ' + json.dumps({k: v for k, v in os.environ.items() if k.startswith('LOOMOS_')}))\n"
    )
    settings = encrypting_settings(tmp_path, keyring_path, "restricted")
    spec = JobSpec(name="env", entrypoint="env.py", working_directory=str(work))
    spec.checkpoint_config.encryption_enabled = True
    result = await run_training(settings, request(new_job_id("env"), spec))
    assert isinstance(result, TrainingProgress), result
    line = next(x for x in Path(result.log_path).read_text().splitlines() if x.startswith("ENV "))
    env = json.loads(line.removeprefix("ENV "))
    assert env[contract.ENV_CHECKPOINT_ENCRYPTION] == "restricted"
    assert env[contract.ENV_KEY_FILE] == str(keyring_path) and env[contract.ENV_KEY_PROVIDER] == "local"
    secret = provider.current()[1]
    assert base64.b64encode(secret).decode() not in line and secret.hex() not in line
    assert not any(k.startswith("LOOMOS_CRYPTO_") for k in env)  # the node's own settings stay its own

    os.chmod(keyring_path, 0o644)
    err = await run_training(settings, request(new_job_id("env"), spec))
    assert isinstance(err, ApplicationError) and err.type == FailureKind.INVALID_JOB.value, err
    assert f"checkpoint encryption: key file {keyring_path} is readable by others" in err.message
