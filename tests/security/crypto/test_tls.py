"""Encryption in transit, with trustme's throwaway CA and real clients.

- `loomos api` with a certificate serves HTTPS, TLS 1.3 only, with HSTS (a real `loomos api`
  process, httpx trusting the CA).
- Workers and LoomCtl reach Temporal with mTLS (temporal.tls.*): a TLS terminator in front of
  the dev server requires client certificates; a worker with one runs a workflow, a client
  without one is refused.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import trustme
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from loomos.security.crypto.tls import HSTS_VALUE
from loomos.settings import Settings
from loomos.temporal.client import connect_temporal
from tests.helpers import REPO
from tests.helpers.api_harness import free_port
from tests.security.crypto.tls_proxy import TLSTerminator, mtls_server_context


@dataclass
class PKI:
    ca: Path
    server_chain: Path
    server_key: Path
    client_chain: Path
    client_key: Path
    stranger_chain: Path  # from a CA the server does not trust
    stranger_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    folder = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("worker-1.loomos.internal")
    stranger = other_ca.issue_cert("worker-1.loomos.internal")
    files = {
        "ca": ca.cert_pem,
        "server_chain": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client_chain": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
        "stranger_chain": stranger.cert_chain_pems[0],
        "stranger_key": stranger.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        paths[name] = folder / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    return PKI(**paths)


# --- LoomCtl over HTTPS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def https_api(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `loomos api` process with --tls-cert/--tls-key (no Temporal: /healthz answers anyway)."""
    port = free_port()
    folder = tmp_path_factory.mktemp("api")
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "LOOMOS_DB_URL": f"sqlite:///{folder / 'loom.sqlite'}",
        "LOOMOS_TEMPORAL_ENVCONFIG": "false",
    }
    cmd = [sys.executable, "-m", "loomos.cli", "api", "--port", str(port)]
    cmd += ["--tls-cert", str(pki.server_chain), "--tls-key", str(pki.server_key)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                httpx.get(url + "/healthz", verify=str(pki.ca), timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "loomos api did not answer over HTTPS"
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def test_loomctl_serves_tls_1_3_with_hsts(https_api: str, pki: PKI) -> None:
    with httpx.Client(verify=str(pki.ca)) as client:
        r = client.get(https_api + "/healthz")
        assert r.status_code == 200
        assert r.extensions["network_stream"].get_extra_info("ssl_object").version() == "TLSv1.3"
        assert r.headers["strict-transport-security"] == HSTS_VALUE


def test_loomctl_refuses_tls_1_2_plain_http_and_untrusting_clients(https_api: str, pki: PKI) -> None:
    old = ssl.create_default_context(cafile=str(pki.ca))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(httpx.ConnectError, match="(?i)protocol version|alert|EOF"):  # no TLS 1.2 handshake
        httpx.get(https_api + "/healthz", verify=old)
    with pytest.raises(httpx.HTTPError):
        httpx.get(https_api.replace("https://", "http://") + "/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(https_api + "/healthz")  # the system's CAs do not know trustme's


def test_a_certificate_without_its_key_is_one_error_line(pki: PKI) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loomos.cli",
            "api",
            "--port",
            str(free_port()),
            "--tls-cert",
            str(pki.server_chain),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "error: api.tls_key: missing" in done.stderr and "Traceback" not in done.stderr
    mismatched = subprocess.run(
        [sys.executable, "-m", "loomos.cli", "api", "--port", str(free_port()),
         "--tls-cert", str(pki.server_chain), "--tls-key", str(pki.client_key)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert mismatched.returncode == 2 and "are not a PEM certificate and its private key" in mismatched.stderr


# --- Temporal with mTLS through a TLS terminator ------------------------------------------------


@activity.defn(name="mtls_probe_greet")
async def greet(name: str) -> str:
    return f"hello {name}"


@workflow.defn(name="MtlsProbe")
class MtlsProbe:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(greet, name, start_to_close_timeout=timedelta(seconds=20))


@pytest.fixture
async def terminator(dev_server: WorkflowEnvironment, pki: PKI) -> AsyncIterator[tuple[TLSTerminator, str]]:
    proxy = TLSTerminator(
        dev_server.client.service_client.config.target_host,
        mtls_server_context(pki.server_chain, pki.server_key, client_ca=pki.ca),
    )
    address = await proxy.start()
    yield proxy, address
    await proxy.stop()


def mtls_settings(address: str, pki: PKI, chain: Path | None, key: Path | None) -> Settings:
    tls: dict[str, str] = {"server_ca_cert": str(pki.ca), "server_name": "localhost"}
    if chain and key:
        tls |= {"client_cert": str(chain), "client_key": str(key)}
    return Settings.model_validate({"temporal": {"address": address, "envconfig": False, "tls": tls}})


async def test_a_worker_with_a_client_certificate_runs_a_workflow(terminator, pki: PKI) -> None:
    proxy, address = terminator
    client = await connect_temporal(mtls_settings(address, pki, pki.client_chain, pki.client_key))
    queue = f"mtls-probe-{time.monotonic_ns()}"
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[MtlsProbe],
        activities=[greet],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    async with worker:
        result = await client.execute_workflow(MtlsProbe.run, "node", id=queue, task_queue=queue)
    assert result == "hello node" and proxy.accepted >= 1


async def test_clients_without_a_trusted_certificate_are_refused(terminator, pki: PKI) -> None:
    _, address = terminator
    for chain, key in ((None, None), (pki.stranger_chain, pki.stranger_key)):
        with pytest.raises(RuntimeError, match="(?i)connect"):
            await connect_temporal(mtls_settings(address, pki, chain, key))
    plaintext = Settings.model_validate({"temporal": {"address": address, "envconfig": False}})
    with pytest.raises(RuntimeError, match="(?i)connect"):
        await connect_temporal(plaintext)
