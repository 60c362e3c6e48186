"""`loomos keys list|rotate` through Typer's CliRunner: ids and ages, never key material; one
`error:` line naming the keyring for a keyring that cannot serve."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from loomos.cli import app
from loomos.security.crypto.keys import open_key_provider

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_project_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no temporal-dev.yaml above: defaults and the variables below
    monkeypatch.delenv("LOOMOS_CONFIG", raising=False)


def keys(keyring: Path, *args: str, **env: str) -> Result:
    variables = {"COLUMNS": "200", "LOOMOS_CRYPTO_KEY_FILE": str(keyring), **env}
    return runner.invoke(app, ["keys", *args], env=variables)


def test_rotate_creates_then_adds_and_list_shows_no_material(tmp_path: Path) -> None:
    ring = tmp_path / "keys" / "ring.json"
    created = keys(ring, "rotate")
    assert created.exit_code == 0, created.output
    assert "created the keyring with key k-" in created.output and str(ring) in created.output
    added = keys(ring, "rotate")
    assert added.exit_code == 0 and "added key" in added.output and "copy the keyring" in added.output
    listed = keys(ring, "list", "--json")
    assert listed.exit_code == 0, listed.output
    shown = json.loads(listed.stdout)
    secrets = [e["secret"] for e in json.loads(ring.read_text())["keys"]]
    assert [k["key_id"] for k in shown["keys"]] == [e["id"] for e in json.loads(ring.read_text())["keys"]]
    assert [k["newest"] for k in shown["keys"]] == [False, True] and shown["rotation_due"] is False
    table = keys(ring, "list")
    assert table.exit_code == 0 and shown["keys"][1]["key_id"] in table.output and "newest" in table.output
    for secret in secrets:
        assert secret not in listed.output and secret not in table.output


def test_rotate_if_due_follows_key_rotation_days(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    open_key_provider("local", ring).rotate(now=datetime.now(UTC) - timedelta(days=10))
    not_due = keys(ring, "rotate", "--if-due", LOOMOS_CRYPTO_KEY_ROTATION_DAYS="30")
    assert not_due.exit_code == 0 and "not due" in not_due.output
    assert len(json.loads(ring.read_text())["keys"]) == 1
    listed = keys(ring, "list", LOOMOS_CRYPTO_KEY_ROTATION_DAYS="7")
    assert "rotation due" in listed.output and "loomos keys rotate" in listed.output
    due = keys(ring, "rotate", "--if-due", LOOMOS_CRYPTO_KEY_ROTATION_DAYS="7")
    assert due.exit_code == 0 and "added key" in due.output
    assert len(json.loads(ring.read_text())["keys"]) == 2


def test_a_keyring_that_cannot_serve_is_one_error_line(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    missing = keys(ring, "list")
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert missing.stderr.strip().startswith(f"error: key file {ring} does not exist")
    open_key_provider("local", ring).rotate()
    ring.chmod(0o644)
    exposed = keys(ring, "list")
    assert exposed.exit_code == 2
    assert f"run chmod 600 {ring}" in " ".join(exposed.stderr.split())
