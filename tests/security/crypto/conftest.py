"""Keyrings for the crypto tests: a local one with a key in it, on a fresh folder each time."""

from __future__ import annotations

from pathlib import Path

import pytest

from loomos.security.crypto.keys import LocalKeyProvider, open_key_provider


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "keyring.json"


@pytest.fixture
def provider(keyring_path: Path) -> LocalKeyProvider:
    made = open_key_provider("local", keyring_path)
    made.rotate()
    assert isinstance(made, LocalKeyProvider)
    return made
