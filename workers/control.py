"""The control worker: job, scheduler and log workflows plus the control activities (placement,
audit, admission and the quota ledger).

It runs IdentityInterceptor: a job workflow passes the identity LoomCtl put in its headers on
to its activities, where admission reads it.

Stateless: run as many copies as you like against one Temporal cluster; Temporal hands each
workflow task to one of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import Worker

from loomos.activities.scheduling import request_placement
from loomos.settings import Settings, load_settings
from loomos.temporal.client import connect_temporal
from loomos.temporal.identity import IdentityInterceptor
from loomos.temporal.names import CONTROL_TASK_QUEUE
from loomos.workflows.job import JobWorkflow
from loomos.workflows.logs import FetchLogsWorkflow
from loomos.workflows.scheduler import SchedulerWorkflow

WORKFLOWS: Sequence[type] = (JobWorkflow, SchedulerWorkflow, FetchLogsWorkflow)
log = structlog.get_logger()


def control_activities(settings: Settings) -> list[Any]:
    """Every activity the control queue serves (loomos.temporal.activities.ControlActivities),
    wired to this deployment's LoomDB."""
    from loomos.activities.admission import AdmissionActivities
    from loomos.activities.audit import AuditActivities
    from loomos.loomdb import open_event_store
    from loomos.security.authz.authorizer import shared_authorizer
    from loomos.security.authz.ledger import QuotaLedger

    store = open_event_store(settings.loomdb.url)
    audit = AuditActivities(store)
    authorizer = shared_authorizer(settings)
    admission = AdmissionActivities(authorizer, QuotaLedger(authorizer.engine), store)
    return [
        request_placement,
        audit.record_audit_events,
        admission.admit_job,
        admission.record_job_usage,
        admission.release_admission,
    ]


def build_control_worker(client: Client, settings: Settings, activities: list[Any] | None = None) -> Worker:
    return Worker(
        client,
        task_queue=CONTROL_TASK_QUEUE,
        workflows=list(WORKFLOWS),
        activities=activities if activities is not None else control_activities(settings),
        interceptors=[IdentityInterceptor()],
    )


async def run_control_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    client = await connect_temporal(settings)
    worker = build_control_worker(client, settings)
    log.info("control worker polling", task_queue=CONTROL_TASK_QUEUE, temporal=settings.temporal.address)
    async with worker:
        await (stop or asyncio.Event()).wait()


if __name__ == "__main__":
    from loomos.workers.entry import run_until_signalled

    run_until_signalled(lambda stop: run_control_worker(load_settings(), stop))
