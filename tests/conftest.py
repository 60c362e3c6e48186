"""Shared fixtures. Real components: the Temporal dev/test servers from their PyPI packages,
Postgres at 127.0.0.1:5432 (database `test`), real torchrun processes."""

from __future__ import annotations

import os

import pytest

POSTGRES_URL = os.environ.get("LOOMOS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL.replace("+psycopg", ""), connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail(f"Postgres is not reachable at {POSTGRES_URL} (CI must provide it)")
        pytest.skip(f"Postgres is not reachable at {POSTGRES_URL}")
    return POSTGRES_URL
