"""`loomos market refresh` end to end, as a user runs it: no injected clients, each SDK finds
its credentials through its usual chain (AWS keys in the environment, a gcloud
authorized-user file, an Azure service principal in the environment), and every request
those SDKs send, token requests included, is answered offline at the HTTP layer. Then the
refreshed catalog is what `offers`, `catalog` and `estimate` use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import responses
import yaml
from typer.testing import CliRunner

from loomos.cli import app
from tests.helpers.marketplace import gcp_responses
from tests.helpers.marketplace.aws_wire import AwsRegionData, AwsWire, install
from tests.helpers.marketplace.azure_responses import PAGE_1, PAGE_2, PRICES_URL, SKUS, SKUS_URL

TENANT = "00000000-0000-0000-0000-0000000000aa"
LOGIN = re.compile(rf"https://login\.microsoftonline\.com/{TENANT}/.*")
GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"

AWS = AwsWire(
    {
        "us-east-1": AwsRegionData(
            on_demand={"p5.48xlarge": "55.0400000000", "g6.2xlarge": "0.9776000000", "g5.xlarge": "0"},
            specs={
                "p5.48xlarge": ("H100", 8, 81920, 192, 2097152),
                "g6.2xlarge": ("L4", 1, 22888, 8, 32768),
                "g5.xlarge": ("A10G", 1, 24576, 4, 16384),
            },
            spot=[("p5.48xlarge", "us-east-1a", "21.000000"), ("p5.48xlarge", "us-east-1b", "24.500000")],
        )
    }
)


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["market", *args], env={"COLUMNS": "250"})


@pytest.fixture
def clouds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> responses.RequestsMock:
    """The three credential chains pointed at offline identities, and the HTTP layer answered."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOFFLINEEXAMPLE01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "offline-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    adc = tmp_path / "adc.json"
    adc.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "offline.apps.googleusercontent.com",
                "client_secret": "offline-secret",
                "refresh_token": "offline-refresh-token",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "sub-1")
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-0000000000bb")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "offline-secret")
    AWS.calls.clear()
    install(monkeypatch, AWS)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        rs.add(
            responses.POST,
            GOOGLE_TOKEN,
            json={"access_token": "gcp-token", "expires_in": 3599, "token_type": "Bearer"},
        )
        gcp_responses.serve(rs, gcp_responses.GOOD_SKUS)
        login = f"https://login.microsoftonline.com/{TENANT}"
        rs.add(
            responses.GET,
            LOGIN,
            json={
                "token_endpoint": f"{login}/oauth2/v2.0/token",
                "authorization_endpoint": f"{login}/oauth2/v2.0/authorize",
                "issuer": f"{login}/v2.0",
            },
        )
        rs.add(
            responses.POST,
            LOGIN,
            json={"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": "arm"},
        )
        rs.add(responses.GET, SKUS_URL, json=SKUS)
        rs.add(responses.GET, PRICES_URL, json=PAGE_1)
        rs.add(responses.GET, PRICES_URL, json=PAGE_2)
        yield rs


REGIONS = ["--region", "aws:us-east-1", "--region", "gcp:us-central1", "--region", "azure:eastus"]


def test_refresh_all_three_providers_through_the_cli(clouds: responses.RequestsMock, tmp_path: Path) -> None:
    target = tmp_path / "catalog.json"
    result = run("refresh", "--catalog", str(target), *REGIONS)
    assert result.exit_code == 0, result.stdout + result.stderr
    # aws: p5 in two zones + g6 kept, the $0 g5 row dropped and reported
    assert re.search(r"aws\s+.\s*ok\s+.\s*3\s+.\s*1\s", result.stdout), result.stdout
    assert "0.0 is not a positive number" in result.stdout  # the $0 g5 row, dropped and reported
    # the SDKs authenticated through their chains: SigV4 with the env keys, the gcloud user's
    # refreshed token, the service principal's ARM token
    assert {(s, a) for s, a, _ in AWS.calls} == {
        ("pricing", "GetProducts"),
        ("ec2", "DescribeInstanceTypes"),
        ("ec2", "DescribeSpotPriceHistory"),
    }
    assert all("Credential=AKIAOFFLINEEXAMPLE01/" in auth for _, _, auth in AWS.calls)
    sent = {c.request.url.split("?")[0]: c.request.headers.get("Authorization") for c in clouds.calls}
    assert any(u.startswith("https://cloudbilling.") and a == "Bearer gcp-token" for u, a in sent.items())
    assert any(u.startswith("https://compute.") and a == "Bearer gcp-token" for u, a in sent.items())
    assert any(u.startswith("https://management.azure.com") and a == "Bearer arm" for u, a in sent.items())

    written = json.loads(target.read_text())
    assert {o["provider"] for o in written["offers"]} == {"aws", "gcp", "azure"}
    p5 = {o["zone"]: o for o in written["offers"] if o["instance_type"] == "p5.48xlarge"}
    assert {z: (o["price_on_demand"], o["price_spot"]) for z, o in p5.items()} == {
        "us-east-1a": (55.04, 21.0),
        "us-east-1b": (55.04, 24.5),
    }
    a2 = next(o for o in written["offers"] if o["instance_type"] == "a2-highgpu-8g")
    # 96 x 0.031611 + 680 GiB x 0.004237 + 8 x 2.933908
    assert a2["price_on_demand"] == pytest.approx(96 * 0.031611 + 680 * 0.004237 + 8 * 2.933908)
    for name in ("aws", "gcp", "azure"):
        meta = written["providers"][name]
        assert (
            meta["fetched_at"] and meta["last_error"] is None and "public multi-cloud" not in meta["source"]
        )

    # what users see next comes from the refreshed file, with fresh ages and no stale warning
    offers = run("offers", "--gpu", "H100", "--catalog", str(target), "--json")
    rows = json.loads(offers.stdout)["offers"]
    assert [(r["provider"], r["price_on_demand"]) for r in rows] == [("aws", 55.04), ("aws", 55.04)]
    table = run("offers", "--gpu", "H100", "--catalog", str(target))
    assert table.exit_code == 0 and "warning" not in table.stderr
    meta = json.loads(run("catalog", "--catalog", str(target), "--json").stdout)
    assert meta["providers"]["aws"]["rows"] == 3 and len(meta["providers"]["aws"]["rejected"]) == 1
    spec = tmp_path / "job.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "h100",
                "entrypoint": "train.py",
                "resources": {"gpu_type": "H100", "gpu_count": 8},
                "preemptible": True,
                "marketplace": {"expected_runtime_hours": 4},
            }
        )
    )
    est = json.loads(run("estimate", str(spec), "--catalog", str(target), "--json").stdout)
    record = est["estimate"]["price_record"]
    assert (record["offer_key"], record["price_per_hour"]) == ("aws/us-east-1/us-east-1a/p5.48xlarge", 21.0)
    assert record["catalog_as_of"] == written["providers"]["aws"]["as_of"]


def test_refresh_region_options_name_their_provider(clouds: responses.RequestsMock, tmp_path: Path) -> None:
    target = tmp_path / "catalog.json"
    for args, needle in [
        (["--region", "us-east-1"], "write it as PROVIDER:REGION"),
        (["--provider", "aws", "--region", "gcp:us-central1"], "provider 'gcp' is not being refreshed"),
        (["--provider", "aws", "--region", "aws:"], "empty region name"),
    ]:
        result = run("refresh", "--catalog", str(target), *args)
        assert result.exit_code == 2 and needle in result.stderr, result.stderr
    assert not target.exists()
    # one provider: a bare region is that provider's
    result = run("refresh", "--catalog", str(target), "--provider", "aws", "--region", "us-east-1")
    assert result.exit_code == 0, result.stdout + result.stderr
    written = json.loads(target.read_text())
    # the others were not asked and keep their snapshot rows
    assert written["providers"]["gcp"]["source"].startswith("public multi-cloud")
    assert {o["region"] for o in written["offers"] if o["provider"] == "aws"} == {"us-east-1"}
