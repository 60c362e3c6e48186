"""Real parts for the LoomCtl, SDK and CLI tests: a Temporal dev server with LoomOS's search
attributes, the real job/scheduler/log workflows on a control worker, and LoomCtl served by
uvicorn on a free port (for the synchronous SDK and the CLI, which speak real HTTP).

Only what sits behind a node's task queue (training, reading a log) and LoomDB's audit sink
are scripted here; everything between the HTTP request and those is the production code.
LoomCtl answers every request as the test administrator (tests.helpers.authz), whose identity
also travels to the job workflows it starts; admission runs for real on a database of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import uvicorn
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from loomos.activities.scheduling import announce_node, request_placement
from loomos.activities.training import TrainingActivities
from loomos.api.app import create_app
from loomos.models.audit import AuditBatch
from loomos.models.scheduler import NodeInfo
from loomos.models.training import LogsRequest, LogsResult, ProgressRequest, TrainingProgress, TrainingRequest
from loomos.settings import Settings
from loomos.temporal import names
from loomos.temporal.identity import IdentityInterceptor
from loomos.temporal.names import CONTROL_TASK_QUEUE, node_task_queue
from loomos.workers.node import keep_registered
from loomos.workflows.job import JobWorkflow
from loomos.workflows.logs import FetchLogsWorkflow
from loomos.workflows.scheduler import SchedulerWorkflow
from tests.helpers.authz import AdmissionHarness, authenticated
from tests.helpers.temporal_servers import settings_for, start_dev_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AuditSink:
    """Stands in for LoomDB: the job workflow's audit batches, kept in memory."""

    batches: list[AuditBatch] = field(default_factory=list)

    @activity.defn(name=names.RECORD_AUDIT_EVENTS)
    async def record_audit_events(self, batch: AuditBatch) -> None:
        self.batches.append(batch)


class ScriptedNode:
    """A node worker whose training attempts and log reads are scripted by the test.

    `behaviours[job_name]` is an async function of (request, node) run as the attempt: it
    may heartbeat, wait for cancellation, return progress or raise.
    """

    def __init__(self, node_id: str, pool: str = "default", slots: int = 4) -> None:
        self.info = NodeInfo(
            node_id=node_id,
            pool=pool,
            task_queue=node_task_queue(node_id),
            host="127.0.0.1",
            accelerator="cpu",
            gpu_type="cpu",
            slots=slots,
        )
        self.behaviours: dict[str, Callable[[TrainingRequest, ScriptedNode], Any]] = {}
        self.logs: dict[tuple[str, int], str] = {}
        # What a stopped attempt "wrote" on SIGTERM, as read_training_progress reports it.
        self.stop_progress: dict[tuple[str, int], TrainingProgress] = {}
        self.cancelled: list[str] = []

    @activity.defn(name=names.RUN_TRAINING)
    async def run_training(self, req: TrainingRequest) -> TrainingProgress:
        behaviour = self.behaviours.get(req.spec.name)
        if behaviour is None:
            return TrainingProgress(attempt=req.attempt, node_id=self.info.node_id, step=1, total_steps=1)
        return await behaviour(req, self)

    @activity.defn(name=names.READ_TRAINING_PROGRESS)
    async def read_training_progress(self, req: ProgressRequest) -> TrainingProgress:
        progress = self.stop_progress.get((req.job_id, req.attempt))
        if progress is None:
            raise ApplicationError(
                f"no progress record of job {req.job_id} attempt {req.attempt}",
                type=names.ErrorType.PROGRESS_NOT_FOUND,
                non_retryable=True,
            )
        return progress

    @activity.defn(name=names.READ_TRAINING_LOG)
    async def read_training_log(self, req: LogsRequest) -> LogsResult:
        text = self.logs.get((req.job_id, req.attempt))
        if text is None:
            raise ApplicationError(
                f"no log of job {req.job_id} attempt {req.attempt} on node {req.node_id}",
                type=names.ErrorType.LOG_NOT_FOUND,
                non_retryable=True,
            )
        data = text.encode()
        tail = data[-req.tail_bytes :]
        return LogsResult(
            job_id=req.job_id,
            attempt=req.attempt,
            node_id=self.info.node_id,
            path=f"/logs/{req.job_id}/attempt-{req.attempt}-node-0.log",
            text=tail.decode(errors="ignore"),
            truncated=len(tail) < len(data),
            size_bytes=len(data),
        )


@contextlib.asynccontextmanager
async def control_worker(client: Client, audit: AuditSink) -> AsyncIterator[Worker]:
    admission = AdmissionHarness()
    worker = Worker(
        client,
        task_queue=CONTROL_TASK_QUEUE,
        workflows=[JobWorkflow, SchedulerWorkflow, FetchLogsWorkflow],
        activities=[request_placement, audit.record_audit_events, *admission.activities],
        interceptors=[IdentityInterceptor()],
    )
    try:
        async with worker:
            yield worker
    finally:
        admission.close()


@contextlib.asynccontextmanager
async def node_worker(
    client: Client, node: ScriptedNode, real_training: Settings | None = None
) -> AsyncIterator[Worker]:
    """A node worker for `node`; with `real_training` settings it runs the production training
    activities (real torchrun) under the scripted node's identity instead of its scripts."""
    if real_training is not None:
        training = TrainingActivities(real_training, node.info.node_id)
        activities: list[Any] = [
            training.run_training, training.read_training_log, training.read_training_progress
        ]
    else:
        activities = [node.run_training, node.read_training_log, node.read_training_progress]
    worker = Worker(
        client,
        task_queue=node.info.task_queue,
        activities=activities,
        # Cancellation reaches an activity with a heartbeat's answer; do not batch them for 24 s.
        max_heartbeat_throttle_interval=timedelta(milliseconds=200),
    )
    async with worker:
        await announce_node(client, node.info)
        # Renew the node's lease as a real node worker does: a harness shared by a whole
        # session outlives the scheduler's lease (60 s), after which the node gets no work.
        renewal = asyncio.create_task(keep_registered(client, node.info, interval_s=10))
        try:
            yield worker
        finally:
            renewal.cancel()


@contextlib.contextmanager
def serve_api(settings: Settings) -> Iterator[str]:
    """LoomCtl on a free port in a background thread (own event loop, own Temporal client)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = authenticated(create_app(settings))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("LoomCtl did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


async def eventually(check: Callable[[], Any], timeout: float = 15, interval: float = 0.2) -> Any:
    """Poll an async check until it returns something truthy (visibility is eventually consistent)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


class LoomOSInThread:
    """Dev server, control worker, a scripted node and LoomCtl on uvicorn, all on one event loop
    in a background thread, for synchronous callers (the SDK's LoomOSClient, the CLI) that
    would otherwise block the loop the workers need.

        with LoomOSInThread() as loomos:
            LoomOSClient(loomos.endpoint).submit(...)
            loomos.call(loomos.client.get_workflow_handle(...).terminate())
    """

    def __init__(self, node_id: str = "sync-node-1", real_training: Settings | None = None) -> None:
        self.node = ScriptedNode(node_id)
        self.real_training = real_training
        self.endpoint = ""
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.env: WorkflowEnvironment | None = None

    @property
    def client(self) -> Client:
        assert self.env is not None
        return self.env.client

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the stack's loop (Temporal clients belong to the loop they use)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.env = await start_dev_server()
        except BaseException as err:
            self._failure = err
            self._ready.set()
            return
        try:
            async with (
                control_worker(self.env.client, AuditSink()),
                node_worker(self.env.client, self.node, self.real_training),
            ):
                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                self.endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
                app = authenticated(create_app(settings_for(self.env.client)))
                server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
                serving = asyncio.create_task(server.serve(sockets=[sock]))
                while not server.started and not serving.done():
                    await asyncio.sleep(0.02)
                self._ready.set()
                await self._stop.wait()
                server.should_exit = True
                await serving
                sock.close()
        except BaseException as err:
            self._failure = err
            self._ready.set()
        finally:
            await self.env.shutdown()

    def __enter__(self) -> LoomOSInThread:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("LoomOS stack did not start within 60 s")
        if self._failure is not None:
            raise RuntimeError(f"LoomOS stack failed to start: {self._failure!r}") from self._failure
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
