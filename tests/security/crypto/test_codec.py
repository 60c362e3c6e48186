"""Temporal payload encryption (loomos.security.crypto.codec through loomos.temporal.client):
the codec alone, then a real dev server and worker: inputs, results, headers and failure
messages reach the server only as ciphertext, and come back in clear to LoomOS's processes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.history.v1 import History
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client, Interceptor, OutboundInterceptor, StartWorkflowInput
from temporalio.common import HeaderCodecBehavior, RetryPolicy
from temporalio.converter import default as default_converter
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ExecuteWorkflowInput,
    UnsandboxedWorkflowRunner,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)
from temporalio.worker import Interceptor as WorkerInterceptor

from loomos.security.crypto.codec import ENCODING, META_KEY_ID, EncryptionCodec
from loomos.security.crypto.errors import IntegrityError, UnknownKeyId
from loomos.security.crypto.keys import open_key_provider
from loomos.settings import Settings
from loomos.temporal.client import connect_temporal, data_converter
from tests.helpers.temporal_servers import settings_for

SECRET = "hunter2-WANDB_API_KEY-value"
HEADER = "loomos-probe"


def plain(text: str) -> Payload:
    return default_converter().payload_converter.to_payloads([text])[0]


# --- the codec alone ---------------------------------------------------------------------------


async def test_payloads_round_trip_and_name_their_key(provider) -> None:
    codec = EncryptionCodec(provider)
    sent = [plain(SECRET), plain("second")]
    sealed = await codec.encode(sent)
    for p in sealed:
        assert p.metadata["encoding"] == ENCODING and SECRET.encode() not in p.SerializeToString()
        assert p.metadata[META_KEY_ID].decode() == provider.current()[0]
    assert await codec.decode(sealed) == sent
    assert await codec.decode(sent) == sent  # not encrypted: passes through (old histories)


async def test_payloads_stay_readable_after_rotation(provider, keyring_path: Path) -> None:
    codec = EncryptionCodec(provider)
    old = await codec.encode([plain("before")])
    info, _ = open_key_provider("local", keyring_path).rotate(now=datetime.now(UTC) + timedelta(seconds=1))
    codec._checked = 0.0  # next encode looks for a newer key on disk at once (every 30 s otherwise)
    new = await codec.encode([plain("after")])
    assert new[0].metadata[META_KEY_ID].decode() == info.key_id != old[0].metadata[META_KEY_ID].decode()
    fresh = EncryptionCodec(open_key_provider("local", keyring_path))
    assert [p.data for p in await fresh.decode(old + new)] == [b'"before"', b'"after"']


async def test_tampered_and_unknown_key_payloads_are_refused(provider, tmp_path: Path) -> None:
    codec = EncryptionCodec(provider)
    (sealed,) = await codec.encode([plain(SECRET)])
    altered = Payload()
    altered.CopyFrom(sealed)
    altered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(IntegrityError, match="does not authenticate"):
        await codec.decode([altered])
    other = open_key_provider("local", tmp_path / "other.json")
    other.rotate()
    with pytest.raises(UnknownKeyId, match=rf"{provider.current()[0]}.*a Temporal payload"):
        await EncryptionCodec(other).decode([sealed])


async def test_a_key_past_its_rotation_age_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = open_key_provider("local", tmp_path / "ring.json", rotation_days=30)
    info, _ = old.rotate(now=datetime.now(UTC) - timedelta(days=31))
    with caplog.at_level("WARNING", logger="loomos.security.crypto.codec"):
        await EncryptionCodec(old).encode([plain("x")])
    assert f"payload key {info.key_id} is older than key_rotation_days (30)" in caplog.text


def test_the_data_converter_is_plain_unless_payload_encryption_is_on(keyring_path: Path) -> None:
    settings = Settings()
    assert data_converter(settings).payload_codec is None
    settings.security.crypto.payload_encryption = True
    settings.security.crypto.key_file = str(keyring_path)
    converter = data_converter(settings)
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert "EncodedAttributes" in converter.failure_converter_class.__name__


# --- a real server and worker ------------------------------------------------------------------


@activity.defn(name="codec_probe_echo")
async def echo(text: str) -> str:
    return f"activity saw {text}"


@activity.defn(name="codec_probe_fail")
async def fail(text: str) -> None:
    raise ApplicationError(f"failed holding {text}", non_retryable=True)


@workflow.defn(name="CodecProbe")
class CodecProbe:
    @workflow.run
    async def run(self, text: str) -> str:
        echoed = await workflow.execute_activity(echo, text, start_to_close_timeout=timedelta(seconds=20))
        try:
            await workflow.execute_activity(
                fail,
                text,
                start_to_close_timeout=timedelta(seconds=20),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as err:
            assert isinstance(err.cause, ApplicationError)
            return f"{echoed} / {err.cause.message}"
        return echoed


class _SendHeader(OutboundInterceptor):
    async def start_workflow(self, input: StartWorkflowInput) -> Any:
        input.headers = {**input.headers, HEADER: plain(f"header {SECRET}")}
        return await super().start_workflow(input)


class SendHeader(Interceptor):
    """As LoomCtl passes the caller's identity: in a header of the workflow it starts."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _SendHeader(next)


class _ReadHeader(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        result = await super().execute_workflow(input)
        header = input.headers.get(HEADER)
        seen = default_converter().payload_converter.from_payload(header, str) if header else "no header"
        return f"{result} / {seen}"


class ReadHeader(WorkerInterceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _ReadHeader


def encrypted_settings(client: Client, keyring: Path) -> Settings:
    settings = settings_for(client)
    settings.security.crypto.payload_encryption = True
    settings.security.crypto.key_file = str(keyring)
    return settings


async def raw_history(client: Client, workflow_id: str) -> History:
    """The history as the server stores it: no data converter, no codec."""
    response = await client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )
    return response.history


def payloads_of(history: History) -> list[Payload]:
    """Every payload the history holds: inputs, results, headers, failure details."""
    found: list[Payload] = []

    def walk(message: Any) -> None:
        if isinstance(message, Payload):
            found.append(message)
            return
        for _field, value in message.ListFields():
            if isinstance(value, Message):
                walk(value)
            elif not isinstance(value, str | bytes | int | float):  # a repeated field or a map
                for item in value.values() if hasattr(value, "values") else value:
                    if isinstance(item, Message):
                        walk(item)

    walk(history)
    return found


async def test_a_worker_round_trips_encrypted_payloads_headers_and_failures(
    dev_server: WorkflowEnvironment, provider, keyring_path: Path
) -> None:
    client = await connect_temporal(encrypted_settings(dev_server.client, keyring_path))
    assert client.config()["header_codec_behavior"] == HeaderCodecBehavior.CODEC
    client = Client(**{**client.config(), "interceptors": [SendHeader()]})
    queue = f"codec-probe-{datetime.now().timestamp()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[CodecProbe],
        activities=[echo, fail],
        interceptors=[ReadHeader()],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await client.start_workflow(
            CodecProbe.run, SECRET, id=f"codec-probe-{queue}", task_queue=queue
        )
        result = await handle.result()
    assert result == f"activity saw {SECRET} / failed holding {SECRET} / header {SECRET}"

    history = await raw_history(client, handle.id)
    assert SECRET.encode() not in history.SerializeToString()  # not in any input, result, header, failure
    payloads = payloads_of(history)
    assert len(payloads) >= 6 and all(p.metadata["encoding"] == ENCODING for p in payloads)
    start = history.events[0].workflow_execution_started_event_attributes
    assert start.header.fields[HEADER].metadata["encoding"] == ENCODING  # the identity's way in
    failed = next(e for e in history.events if e.HasField("activity_task_failed_event_attributes"))
    assert failed.activity_task_failed_event_attributes.failure.message == "Encoded failure"
    # LoomOS's own reads (LoomCtl, the CLI) go through the codec: in clear again.
    assert await client.get_workflow_handle(handle.id).result() == result


async def test_a_client_without_the_key_sees_only_ciphertext(
    dev_server: WorkflowEnvironment, provider, keyring_path: Path
) -> None:
    client = await connect_temporal(encrypted_settings(dev_server.client, keyring_path))
    handle = await client.start_workflow(
        CodecProbe.run, SECRET, id=f"codec-idle-{datetime.now().timestamp()}", task_queue="codec-nobody-polls"
    )
    stranger = Client(
        **{
            **client.config(),
            "data_converter": dataclasses.replace(client.data_converter, payload_codec=None),
        }
    )
    start = (await raw_history(stranger, handle.id)).events[0].workflow_execution_started_event_attributes
    (sealed,) = start.input.payloads
    assert sealed.metadata["encoding"] == ENCODING and SECRET.encode() not in sealed.data
    await handle.terminate("test over")
