"""Shared fixtures. Real components: the Temporal dev/test servers from their PyPI packages,
Postgres at 127.0.0.1:5432 (database `test`), real torchrun processes.

One of each Temporal server per session; each test module that needs workers starts its own on
them (pools, node ids and job names are unique per test, so modules do not see each other's
work). Helpers live in tests/helpers.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.testing import WorkflowEnvironment

from loomos.settings import Settings
from tests.helpers.api_harness import LoomOSInThread, free_port, serve_api
from tests.helpers.temporal_servers import start_dev_server, start_time_skipping_server

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


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """A Temporal dev server with LoomOS's search attributes, on the session's event loop."""
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: workflow tests sleep through retry backoffs in no time."""
    env = await start_time_skipping_server()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def loomos_stack() -> Iterator[LoomOSInThread]:
    """Dev server, control worker, a scripted node and LoomCtl on their own thread, for the
    synchronous SDK client and the CLI."""
    with LoomOSInThread() as stack:
        yield stack


@pytest.fixture(scope="session")
def no_temporal_endpoint() -> Iterator[str]:
    """LoomCtl up, Temporal down."""
    settings = Settings.model_validate({"temporal": {"address": f"127.0.0.1:{free_port()}"}})
    with serve_api(settings) as endpoint:
        yield endpoint
