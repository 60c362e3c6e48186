"""LoomCtl's codec server for the Temporal UI (/api/v1/codec), over real HTTP with a real login:
the UI's protocol, CORS for the UI's exact origin with credentials, the namespace, the audit
event of every decode; a job's history as the server keeps it (ciphertext) decoded back to its
spec; and `loomos dev`'s Temporal UI configured with the endpoint."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.converter import default as default_converter
from temporalio.testing import WorkflowEnvironment

from loomos.api.app import create_app
from loomos.devstack.stack import StackLayout, codec_endpoint, free_ports, plan_services
from loomos.loomdb import EventQuery, open_event_store
from loomos.models.spec import JobSpec
from loomos.security.authn.audit import AuditWriter
from loomos.security.authn.authenticator import Authenticator
from loomos.security.authz.roles import open_role_store
from loomos.security.crypto.codec import ENCODING, EncryptionCodec, payloads_to_json
from loomos.security.db import open_security_db
from loomos.settings import Settings
from loomos.temporal.client import connect_temporal
from loomos.workflows.job import JobWorkflow, JobWorkflowInput
from tests.helpers.temporal_servers import settings_for
from tests.security.authn.conftest import PASSWORD, cheap_passwords
from tests.security.authn.serving import serve

UI = "http://127.0.0.1:8233"  # the dev stack's UI: the default allowed origin
SECRET = "s3cr3t-token-in-an-env-var"


@pytest.fixture
def loomctl(tmp_path: Path, provider, keyring_path: Path) -> Iterator[tuple[str, Any, str]]:
    """LoomCtl with payload encryption on and real authentication and authorization: alice is a
    data_scientist in team vision (jobs:read), nora has no role. Yields alice's session token."""
    url = f"sqlite:///{tmp_path / 'loom.sqlite'}"
    settings = Settings.model_validate({"loomdb": {"url": url}})
    settings.security.crypto.payload_encryption = True
    settings.security.crypto.key_file = str(keyring_path)
    app = create_app(settings)
    engine = open_security_db(url)
    app.state.security_db = engine
    app.state.loomdb = open_event_store(url)
    app.state.authn = authn = Authenticator(
        settings.security.authn,
        engine,
        audit=AuditWriter(app.state.loomdb, interval_s=0.01),
        role_store=open_role_store(settings, engine),
        passwords=cheap_passwords(),
    )
    for user in ("alice", "nora"):
        authn.accounts.create_local(user, PASSWORD, default_team="vision")
    authn.role_store.grant_role("alice", "vision", "data_scientist")
    with serve(app) as endpoint:
        app.state.tokens = {user: login(endpoint, user) for user in ("alice", "nora")}
        yield endpoint, app, app.state.tokens["alice"]
    if getattr(app.state, "authz_audit", None) is not None:
        app.state.authz_audit.close()


def login(endpoint: str, user: str) -> str:
    done = httpx.post(endpoint + "/api/v1/auth/login", json={"username": user, "password": PASSWORD})
    assert done.status_code == 200, done.text
    return done.json()["session"]["token"]


def from_ui(token: str | None, namespace: str | None = "default", origin: str = UI) -> dict[str, str]:
    """What the UI's fetch sends with "include cross-origin credentials": the session cookie."""
    headers = {"Origin": origin, "Content-Type": "application/json"}
    if namespace is not None:
        headers["X-Namespace"] = namespace
    if token is not None:
        headers["Cookie"] = f"loomos_session={token}"
    return headers


def decoded_values(body: dict[str, Any]) -> list[Any]:
    return [json.loads(base64.b64decode(p["data"])) for p in body["payloads"]]


async def sealed_body(provider, *values: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    payloads = default_converter().payload_converter.to_payloads(list(values))
    return payloads_to_json(await EncryptionCodec(provider).encode(payloads))


async def test_a_logged_in_user_decodes_and_every_decode_is_audited(loomctl, provider) -> None:
    endpoint, app, token = loomctl
    body = await sealed_body(provider, SECRET, {"lr": 3e-4})
    assert all(base64.b64decode(p["metadata"]["encoding"]) == ENCODING for p in body["payloads"])
    r = httpx.post(
        f"{endpoint}/api/v1/codec/decode?preserveStorageRefs=true", json=body, headers=from_ui(token)
    )
    assert r.status_code == 200, r.text
    assert decoded_values(r.json()) == [SECRET, {"lr": 3e-4}]
    assert r.headers["access-control-allow-origin"] == UI
    assert r.headers["access-control-allow-credentials"] == "true"

    page = app.state.loomdb.query(EventQuery(event_types=["security.codec.decoded"]))
    (event,) = page.events
    assert event.context.user_id == "alice" and event.stream_id == "security-codec:default"
    assert event.data["namespace"] == "default" and event.data["payloads"] == 2
    assert event.data["encrypted_payloads"] == 2 and SECRET not in json.dumps(event.data)

    encoded = httpx.post(
        f"{endpoint}/api/v1/codec/encode", json=body | {"payloads": []}, headers=from_ui(token)
    )
    assert encoded.status_code == 200 and encoded.json() == {"payloads": []}
    plain = payloads_to_json(default_converter().payload_converter.to_payloads(["from the UI"]))
    encoded = httpx.post(f"{endpoint}/api/v1/codec/encode", json=plain, headers=from_ui(token))
    assert encoded.status_code == 200 and b"from the UI" not in encoded.content
    back = httpx.post(f"{endpoint}/api/v1/codec/decode", json=encoded.json(), headers=from_ui(token))
    assert decoded_values(back.json()) == ["from the UI"]


async def test_no_login_wrong_namespace_and_bad_payloads_are_refused(loomctl, provider, tmp_path) -> None:
    endpoint, app, token = loomctl
    body = await sealed_body(provider, SECRET)
    url = f"{endpoint}/api/v1/codec/decode"
    anonymous = httpx.post(url, json=body, headers=from_ui(None))
    assert anonymous.status_code == 401 and SECRET not in anonymous.text
    assert anonymous.headers["access-control-allow-origin"] == UI  # the UI can read why
    no_role = httpx.post(url, json=body, headers=from_ui(app.state.tokens["nora"]))
    assert no_role.status_code == 403 and "missing permission jobs:read in team vision" in no_role.text
    assert SECRET not in no_role.text and no_role.headers["access-control-allow-origin"] == UI
    for namespace, words in ((None, "X-Namespace header is missing"), ("other", "'other' is not the one")):
        r = httpx.post(url, json=body, headers=from_ui(token, namespace))
        assert r.status_code == 403 and words in r.json()["detail"]
    bad = httpx.post(url, json={"payloads": [{"data": "not base64!"}]}, headers=from_ui(token))
    assert bad.status_code == 400 and "proto3 JSON" in bad.json()["detail"]
    tampered = json.loads(json.dumps(body))
    data = bytearray(base64.b64decode(tampered["payloads"][0]["data"]))
    data[-1] ^= 1
    tampered["payloads"][0]["data"] = base64.b64encode(bytes(data)).decode()
    r = httpx.post(url, json=tampered, headers=from_ui(token))
    assert r.status_code == 400 and "does not authenticate" in r.json()["detail"]
    from loomos.security.crypto.keys import open_key_provider

    other = open_key_provider("local", tmp_path / "other.json")
    other.rotate()
    r = httpx.post(url, json=await sealed_body(other, "x"), headers=from_ui(token))
    assert r.status_code == 503 and other.current()[0] in r.json()["detail"]
    assert not app.state.loomdb.query(EventQuery(event_types=["security.codec.decoded"])).events


def test_cors_answers_the_ui_origin_only_never_a_wildcard(loomctl) -> None:
    endpoint, _, token = loomctl
    asks = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    ok = httpx.options(f"{endpoint}/api/v1/codec/decode", headers={"Origin": UI, **asks})
    assert ok.status_code == 204
    assert (
        ok.headers["access-control-allow-origin"] == UI
        and ok.headers["access-control-allow-credentials"] == "true"
    )
    assert "x-namespace" in ok.headers["access-control-allow-headers"]
    assert "POST" in ok.headers["access-control-allow-methods"]
    evil = "http://evil.example"
    refused = httpx.options(f"{endpoint}/api/v1/codec/decode", headers={"Origin": evil, **asks})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    r = httpx.post(
        f"{endpoint}/api/v1/codec/decode", json={"payloads": []}, headers=from_ui(token, origin=evil)
    )
    assert "access-control-allow-origin" not in r.headers  # the browser withholds the answer
    for response in (ok, r):
        assert response.headers.get("access-control-allow-origin") != "*"


async def test_a_jobs_history_holds_ciphertext_and_the_codec_decodes_it(
    dev_server: WorkflowEnvironment, loomctl, keyring_path: Path
) -> None:
    endpoint, _, token = loomctl
    settings = settings_for(dev_server.client)
    settings.security.crypto.payload_encryption = True
    settings.security.crypto.key_file = str(keyring_path)
    client = await connect_temporal(settings)
    spec = JobSpec(name="secret-env", entrypoint="train.py", environment_variables={"WANDB_API_KEY": SECRET})
    job_id = f"secret-env-{int(time.time() * 1000)}"
    handle = await client.start_workflow(
        JobWorkflow.run,
        JobWorkflowInput(job_id=job_id, spec=spec, submitted_at=datetime.now(UTC)),
        id=f"job-{job_id}",
        task_queue="codec-test-nobody-polls",  # the history as submitted; no worker needed
    )
    raw = await client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace="default", execution=WorkflowExecution(workflow_id=handle.id)
        )
    )
    assert SECRET.encode() not in raw.history.SerializeToString()
    assert b"WANDB_API_KEY" not in raw.history.SerializeToString()
    started = raw.history.events[0].workflow_execution_started_event_attributes
    r = httpx.post(
        f"{endpoint}/api/v1/codec/decode",
        json=payloads_to_json(started.input.payloads),
        headers=from_ui(token),
    )
    assert r.status_code == 200, r.text
    (job_input,) = decoded_values(r.json())
    assert job_input["spec"]["environment_variables"] == {"WANDB_API_KEY": SECRET}
    await handle.terminate("test over")


def test_loomos_dev_gives_the_temporal_ui_the_codec_endpoint(tmp_path: Path) -> None:
    temporal_port, ui_port, api_port = free_ports(3)
    settings = Settings.model_validate(
        {
            "temporal": {"address": f"127.0.0.1:{temporal_port}", "ui_port": ui_port, "db_file": None},
            "api": {"port": api_port},
            "security": {"crypto": {"payload_encryption": True, "key_file": str(tmp_path / "ring.json")}},
        }
    )
    layout = StackLayout(settings, tmp_path, node_id="n1", persistent=False)
    temporal = plan_services(layout)[0]
    assert (
        temporal.cmd[temporal.cmd.index("--ui-codec-endpoint") + 1]
        == f"http://127.0.0.1:{api_port}/api/v1/codec"
    )
    plain = StackLayout(Settings(), tmp_path, node_id="n1")
    assert "--ui-codec-endpoint" not in plan_services(plain)[0].cmd  # no encryption: nothing to decode
    with subprocess.Popen(temporal.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    ui = httpx.get(f"http://127.0.0.1:{ui_port}/api/v1/settings", timeout=2)
                    if ui.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the dev server's UI did not answer"
                time.sleep(0.3)
            assert ui.json()["Codec"]["Endpoint"] == codec_endpoint(layout.settings)
        finally:
            server.terminate()
            server.wait(20)
