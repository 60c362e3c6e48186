"""The node worker: one per GPU host. Registers its capacity with the pool's scheduler and
runs training attempts placed on it, on its own task queue `loomos-node-<node_id>`.

It only dials out to the Temporal frontend, so a node behind NAT needs no inbound port
(except the DDP rendezvous port between the nodes of one multi-node job).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import Worker

from loomos.activities.scheduling import announce_node, withdraw_node
from loomos.activities.training import TrainingActivities
from loomos.models.scheduler import NodeInfo
from loomos.settings import Settings, load_settings
from loomos.temporal.client import connect_temporal
from loomos.workers.node_capacity import detect_node

log = structlog.get_logger()
HEARTBEAT_THROTTLE = timedelta(seconds=1)


def node_activities(settings: Settings, node_id: str) -> list[Any]:
    """Every activity a node's queue serves (loomos.temporal.activities.NodeActivities)."""
    training = TrainingActivities(settings, node_id)
    return [training.run_training, training.read_training_log, training.read_training_progress]


def build_node_worker(client: Client, settings: Settings, node: NodeInfo) -> Worker:
    return Worker(
        client,
        task_queue=node.task_queue,
        activities=node_activities(settings, node.node_id),
        # Capacity is the scheduler's business; this only bounds concurrent attempts + log reads.
        max_concurrent_activities=node.slots * 2 + 4,
        # Heartbeats carry live progress and bring back cancellation. The SDK would batch them
        # to 0.8 x the heartbeat timeout (24 s): users would see steps, and a cancel would reach
        # the training, up to 24 s late. One RPC a second per running attempt is cheap.
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        # On shutdown, running attempts are cancelled: SIGTERM, checkpoint, then kill.
        graceful_shutdown_timeout=timedelta(seconds=1),
    )


async def keep_registered(client: Client, node: NodeInfo, interval_s: float) -> None:
    """Announce the node now and then every interval: the announcement is its liveness lease."""
    while True:
        try:
            await announce_node(client, node)
        except Exception as err:  # Temporal briefly unreachable: try again next round
            log.warning("node registration failed", node_id=node.node_id, error=str(err))
        await asyncio.sleep(interval_s)


async def run_node_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    node = detect_node(settings)  # configuration problems first, before dialling Temporal
    client = await connect_temporal(settings)
    worker = build_node_worker(client, settings, node)
    log.info(
        "node worker polling",
        node_id=node.node_id,
        pool=node.pool,
        task_queue=node.task_queue,
        accelerator=node.accelerator,
        gpu_type=node.gpu_type,
        slots=node.slots,
    )
    registration = asyncio.create_task(keep_registered(client, node, settings.node.register_interval_s))
    try:
        async with worker:
            await (stop or asyncio.Event()).wait()
    finally:
        registration.cancel()
        with contextlib.suppress(Exception):
            await withdraw_node(client, node.node_id, node.pool)


if __name__ == "__main__":
    from loomos.workers.entry import run_until_signalled

    run_until_signalled(lambda stop: run_node_worker(load_settings(), stop))
