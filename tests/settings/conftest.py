"""Settings tests read only what they write: no temporal-dev.yaml found upward from the
current folder, no LOOMOS_/TEMPORAL_ variable of the machine, no Temporal client config of
the user (envconfig's default path lives under $XDG_CONFIG_HOME)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("LOOMOS_", "TEMPORAL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work
