"""`loomos config show|vars`: the effective settings with secrets masked, where each value came
from, every variable; a bad configuration is one error line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from loomos.cli.config import config_app, masked
from loomos.settings import ENV_VARS, leaf_keys

app = typer.Typer()
app.add_typer(config_app, name="config")
runner = CliRunner()


def run(*args: str, **env: str):
    return runner.invoke(app, ["config", *args], env={"COLUMNS": "200", **env})


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_show_json_with_sources_masks_secrets(hermetic: Path) -> None:
    file = write(hermetic / "temporal-dev.yaml", "node:\n  cpu_slots: 4\n")
    result = run(
        "show", "--json", "--sources",
        LOOMOS_DB_URL="postgresql://loom:hunter2@db:5432/loom", LOOMOS_TEMPORAL_API_KEY="tk-secret",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "tk-secret" not in result.output
    out = json.loads(result.stdout)
    assert out["file"] == str(file.resolve())
    assert out["settings"]["loomdb"]["url"] == "postgresql://loom:****@db:5432/loom"
    assert out["settings"]["temporal"]["api_key"] == "****"
    assert out["settings"]["node"]["cpu_slots"] == 4
    assert out["sources"]["node.cpu_slots"] == "file"
    assert out["sources"]["loomdb.url"] == "$LOOMOS_DB_URL"
    assert out["sources"]["api.port"] == "default"
    assert set(out["sources"]) == set(leaf_keys())
    connection = out["temporal_connection"]
    assert connection["target_host"] == "127.0.0.1:7233" and connection["api_key"] == "****"
    assert connection["tls"] == "on (system CAs)"  # an API key turns TLS on
    assert out["temporal_connection_sources"]["api_key"] == "temporal.api_key ($LOOMOS_TEMPORAL_API_KEY)"


def test_show_table(hermetic: Path) -> None:
    result = run("show", "--sources", LOOMOS_NODE_CPU_SLOTS="6")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "node.cpu_slots" in line)
    assert "6" in row and "$LOOMOS_NODE_CPU_SLOTS" in row
    assert "defaults (no temporal-dev.yaml found)" in result.stdout
    assert "Temporal connection" in result.stdout
    plain = run("show")
    assert plain.exit_code == 0 and "$LOOMOS" not in plain.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOOMOS_NODE_CPU_SLOTS": "lots"}, "error: node.cpu_slots: Input should be a valid integer"),
        ({"LOOMOS_TEMPORAL_PROFILE": "nope"}, "error: temporal.profile: no profile 'nope'"),
        (
            {"LOOMOS_TEMPORAL_TLS_SERVER_CA_CERT": "/nonexistent/ca.pem"},
            "error: temporal.tls.server_ca_cert: cannot",
        ),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(hermetic: Path, env: dict[str, str], message: str) -> None:
    result = run("show", **env)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


def test_vars_lists_every_variable() -> None:
    result = run("vars", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [(v["name"], v["key"]) for v in listed] == [(v.name, v.key) for v in ENV_VARS]
    assert all(v["description"] for v in listed)
    table = run("vars")
    assert table.exit_code == 0 and "LOOMOS_NODE_REGISTER_INTERVAL_S" in table.stdout
    assert "TEMPORAL_PROFILE" in table.stdout  # envconfig's own, named below the table


def test_masked() -> None:
    assert masked("postgres://u:p@h/db") == "postgres://u:****@h/db"
    assert masked("sqlite:////tmp/x.sqlite") == "sqlite:////tmp/x.sqlite"
    assert masked("s3://bucket/prefix") == "s3://bucket/prefix"
    assert masked({"a": "https://x:y@z"}) == {"a": "https://x:****@z"}
