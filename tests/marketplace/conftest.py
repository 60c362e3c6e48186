"""Marketplace test fixtures. Every test gets its own catalog location and no on-prem config,
so nothing reads or writes ~/.loomos."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "user-catalog.json"
    monkeypatch.setenv("LOOMOS_CATALOG_PATH", str(path))
    monkeypatch.delenv("LOOMOS_ONPREM_CONFIG", raising=False)
    monkeypatch.delenv("LOOMOS_CATALOG_MAX_AGE_DAYS", raising=False)
    return path
