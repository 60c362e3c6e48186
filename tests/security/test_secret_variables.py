"""Secret environment variables: sealed by LoomCtl for one job, opened only by the node for the
ranks' environment; never in Temporal's history, LoomDB's audit trail, the API's answers or the
processes' logs."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from loomos.api.app import create_app
from loomos.models.spec import SpecError, parse_spec
from loomos.security.crypto.keys import open_key_provider
from loomos.security.crypto.sealed_values import SealedValueError, seal, unseal
from loomos.settings import Settings
from tests.helpers.api_harness import AuditSink, ScriptedNode, control_worker, eventually, node_worker
from tests.helpers.authz import authenticated
from tests.helpers.temporal_servers import settings_for

SECRET = f"s3cr3t-{uuid.uuid4().hex}"
DIGEST = hashlib.sha256(SECRET.encode()).hexdigest()

# Exits 0 only when the rank sees the secret (compared by digest, so the script holds no copy).
CHECK_SCRIPT = f"""
import hashlib, os, sys
seen = os.environ.get("API_KEY", "")
sys.exit(0 if hashlib.sha256(seen.encode()).hexdigest() == "{DIGEST}" else 3)
"""


@pytest.fixture
def provider(tmp_path: Path):  # type: ignore[no-untyped-def]
    p = open_key_provider("local", tmp_path / "keys" / "keyring.json")
    p.rotate()
    return p


def test_a_sealed_value_opens_only_for_its_job_and_variable(provider) -> None:  # type: ignore[no-untyped-def]
    sealed = seal(SECRET, job_id="job-a", name="API_KEY", provider=provider)
    assert SECRET not in sealed and sealed.startswith("sealed:v1:")
    assert unseal(sealed, job_id="job-a", name="API_KEY", provider=provider) == SECRET
    for job_id, name in (("job-b", "API_KEY"), ("job-a", "OTHER")):
        with pytest.raises(SealedValueError, match="does not open"):
            unseal(sealed, job_id=job_id, name=name, provider=provider)
    flipped = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(SealedValueError):
        unseal(flipped, job_id="job-a", name="API_KEY", provider=provider)
    with pytest.raises(SealedValueError, match="not sealed"):
        unseal(SECRET, job_id="job-a", name="API_KEY", provider=provider)


def test_a_variable_is_plain_or_secret_not_both() -> None:
    with pytest.raises(SpecError, match="either as a plain or as a secret"):
        parse_spec(
            {
                "name": "x",
                "entrypoint": "t.py",
                "environment_variables": {"K": "1"},
                "secret_environment_variables": {"K": "2"},
            }
        )
    with pytest.raises(SpecError, match="dynamic loader"):
        parse_spec({"name": "x", "entrypoint": "t.py", "secret_environment_variables": {"LD_PRELOAD": "x"}})
    assert SECRET not in repr(
        parse_spec({"name": "x", "entrypoint": "t.py", "secret_environment_variables": {"K": SECRET}})
    )


@pytest.fixture
async def stack(
    dev_server: WorkflowEnvironment, tmp_path: Path, provider
) -> AsyncIterator[tuple[httpx.AsyncClient, AuditSink]]:  # type: ignore[no-untyped-def]
    key_file = str(tmp_path / "keys" / "keyring.json")
    api_settings = settings_for(dev_server.client)
    api_settings.security.crypto.key_file = key_file
    node_settings = Settings()
    node_settings.security.crypto.key_file = key_file
    node_settings.logs.root = str(tmp_path / "logs")
    node_settings.checkpoints.root = str(tmp_path / "ckpt")
    node_settings.node.allowed_roots = [str(tmp_path)]
    audit = AuditSink()
    node = ScriptedNode(f"secret-node-{uuid.uuid4().hex[:6]}", pool="secrets")
    async with control_worker(dev_server.client, audit), node_worker(dev_server.client, node, node_settings):
        app = authenticated(create_app(api_settings, dev_server.client))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://loomctl") as http:
            yield http, audit


@pytest.mark.e2e
async def test_the_secret_reaches_the_ranks_and_nowhere_else(
    stack: tuple[httpx.AsyncClient, AuditSink],
    dev_server: WorkflowEnvironment,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    http, audit = stack
    (tmp_path / "check.py").write_text(CHECK_SCRIPT)
    spec = {
        "name": "secret-job",
        "entrypoint": "check.py",
        "working_directory": str(tmp_path),
        "pool": "secrets",
        "resources": {"gpu_count": 1},
        "retry_policy": {"max_retries": 0},
        "checkpoint_config": {"enabled": False},
        "secret_environment_variables": {"API_KEY": SECRET},
    }
    r = await http.post("/api/v1/jobs", json=spec)
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]

    async def finished() -> dict | None:
        body = (await http.get(f"/api/v1/jobs/{job_id}")).json()
        return body if body["state"] in ("SUCCEEDED", "FAILED", "REJECTED", "CANCELLED") else None

    final = await eventually(finished, timeout=90)
    assert final["state"] == "SUCCEEDED", final  # the rank saw the secret (exit 0)
    assert SECRET not in str(final)
    history = await dev_server.client.get_workflow_handle(f"job-{job_id}").fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert b"sealed:v1:" in raw and SECRET.encode() not in raw
    assert audit.batches and SECRET not in str([b.model_dump() for b in audit.batches])
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*") if p.is_file())
    captured = capfd.readouterr()
    assert SECRET not in logs + captured.out + captured.err


async def test_without_a_keyring_loomctl_refuses_secrets_and_starts_nothing(
    dev_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = settings_for(dev_server.client)
    settings.security.crypto.key_file = str(tmp_path / "missing.json")
    app = authenticated(create_app(settings, dev_server.client))
    spec = {"name": "nokeys", "entrypoint": "t.py", "secret_environment_variables": {"API_KEY": SECRET}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://loomctl") as http:
        r = await http.post("/api/v1/jobs", json=spec)
        assert r.status_code == 422 and "cannot be sealed" in r.text and SECRET not in r.text
        r = await http.post(
            "/api/v1/jobs", json={**spec, "secret_environment_variables": {"API_KEY": "sealed:v1:k:AAAA"}}
        )
        assert r.status_code == 422 and "give the values in clear" in r.text
    names = [w.id async for w in dev_server.client.list_workflows('WorkflowType = "JobWorkflow"')]
    assert not any(n.startswith("job-nokeys-") for n in names)
