"""`loomos market ...` through Typer's runner: real catalog files, real specs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from loomos.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["market", *args], env={"COLUMNS": "250"})
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    assert needle in err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err


def test_offers_h100_x8_shows_rows_with_ages_and_warns_when_old() -> None:
    code, out, err = run("offers", "--gpu", "H100", "--count", "8")
    assert code == 0, err
    assert "p5.48xlarge" in out and "a3-highgpu-8g" in out and "Standard_ND96isr_H100_v5" in out
    assert "stale-prone" in out and "d " in out  # ages in days
    assert "warning: aws prices are" in err  # the shipped snapshot is older than the default 30 days
    code, out, err = run("offers", "--gpu", "H100", "--max-age-days", "100000")
    assert code == 0 and "warning" not in err


def test_offers_json_filters() -> None:
    code, out, _ = run(
        "offers", "--gpu", "A100", "--provider", "azure", "--spot", "--max-price", "5", "--json"
    )
    assert code == 0
    rows = json.loads(out)["offers"]
    # sorted by spot price per GPU-hour: 2.99 / 8 before 0.444 / 1
    assert [r["instance_type"] for r in rows] == ["Standard_ND96asr_v4", "Standard_NC24ads_A100_v4"]
    assert all(r["age_days"] > 0 for r in rows)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["offers", "--gpu", "TPU"], "unknown GPU type 'TPU'"),
        (["offers", "--provider", "oracle"], "unknown provider"),
        (["offers", "--count", "0"], "count must be at least 1"),
        (["offers", "--max-price", "-3"], "max_price must be positive"),
        (["offers", "--gpu", "cpu"], "GPU machines only"),
        (["estimate", "does-not-exist.yaml"], "cannot read file"),
        (["estimate", "examples/market-finetune-l4.yaml", "--pricing", "spot"], "needs a preemptible job"),
        (["estimate", "examples/market-finetune-l4.yaml", "--pricing", "cheap"], "--pricing must be"),
        (["estimate", "examples/market-finetune-l4.yaml", "--weights", "speed=1"], "weights"),
        (["estimate", "examples/market-finetune-l4.yaml", "--provider", "ibm"], "unknown provider"),
        (["estimate", "examples/market-llm-h100.yaml", "--provider", "onprem"], "allows providers"),
        (["refresh", "--provider", "ibm"], "unknown provider(s) ibm"),
        (["refresh", "--provider", "azure", "--region", "eastus' or 1 eq 1"], "is not a region name"),
        (["refresh", "--provider", "azure", "--region", "east-us"], "not Azure region names: east-us"),
        (["catalog", "--catalog", "nope.json"], "cannot read catalog"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(
    args: list[str], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    code, _, err = run(*args)
    assert_one_line_error(code, err, needle)


def test_bad_spec_and_bad_onprem_config_name_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"name": "x", "entrypoint": "t.py", "resources": {"gpu_count": "lots"}}))
    code, _, err = run("estimate", str(spec))
    assert_one_line_error(code, err, "resources.gpu_count")
    config = tmp_path / "onprem.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "node_types": [
                    {
                        "name": "n",
                        "gpu_type": "H100",
                        "gpu_count": 99,
                        "vcpus": 1,
                        "memory_gb": 1,
                        "price_per_gpu_hour": 1,
                    }
                ]
            }
        )
    )
    code, _, err = run("offers", "--onprem-config", str(config))
    assert_one_line_error(code, err, "node_types.0.gpu_count")


def test_estimate_example_shows_ranked_rows_with_reasons_and_breakdown() -> None:
    code, out, err = run("estimate", str(ROOT / "examples/market-llm-h100.yaml"))
    assert code == 0, err
    assert "feasible options, best first" in out
    assert "spot" in out and "interruptions" in out and "cost 1.00" in out
    assert "compute $" in out and "storage $" in out and "network $" in out


def test_estimate_json_and_infeasible(tmp_path: Path) -> None:
    code, out, _ = run("estimate", str(ROOT / "examples/market-finetune-l4.yaml"), "--json", "--top", "3")
    body = json.loads(out)
    assert code == 0 and body["feasible"] and len(body["options"]) == 3
    assert all(o["pricing_model"] == "on_demand" for o in body["options"])
    assert body["estimate"]["price_record"]["offer_key"] == body["options"][0]["offer_key"]
    spec = tmp_path / "big.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"name": "big", "entrypoint": "t.py", "resources": {"gpu_type": "H100", "gpu_count": 16}}
        )
    )
    code, _, err = run("estimate", str(spec))
    assert code == 1 and "no offer has 16 x H100 in one node" in err


def test_compare_with_onprem_pool() -> None:
    code, out, err = run(
        "compare",
        str(ROOT / "examples/market-a100-onprem-job.yaml"),
        "--onprem-config",
        str(ROOT / "loomos/marketplace/data/onprem-example.yaml"),
        "--json",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [r["provider"] for r in rows][0] == "onprem"
    assert {r["provider"] for r in rows} == {"aws", "gcp", "azure", "onprem"}


def test_catalog_metadata_json() -> None:
    code, out, _ = run("catalog", "--json")
    meta = json.loads(out)
    assert code == 0 and meta["shipped"] and meta["providers"]["aws"]["rows"] == 24


def test_refresh_failure_keeps_rows_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No GCP credentials or project on this machine: the real SDK chain fails, which the
    # command must report while keeping the snapshot's GCP rows.
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    target = tmp_path / "out.json"
    code, out, err = run("refresh", "--provider", "gcp", "--catalog", str(target))
    assert code == 1, out + err
    assert "failed, kept previous rows" in out
    assert json.loads(target.read_text())["providers"]["gcp"]["last_error"]
