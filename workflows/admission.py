"""The job workflow's side of admission and the quota ledger (workflow code: deterministic).

    ledger = AdmissionSteps(workflow_id, enabled=workflow.patched("admission"))
    decision = await ledger.admit(request)      # the first step; the identity is in the headers
    await ledger.attempt("started", attempt, placement) ... await ledger.attempt("ended", ...)
    await ledger.release("succeeded")           # every way out, once

With `enabled` false (a workflow from before admission, replaying) every call but `admit` does
nothing, so old histories see exactly the commands they were recorded with.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from loomos.models.admission import AdmissionDecision, AdmissionRelease, AdmissionRequest, UsageMark
    from loomos.models.scheduler import Placement
    from loomos.temporal.activities import ControlActivities

from loomos.workflows.scheduler_client import CONTROL_ACTIVITY_OPTIONS


class AdmissionSteps:
    def __init__(self, workflow_id: str, enabled: bool) -> None:
        self.workflow_id = workflow_id
        self.enabled = enabled
        self._released = False

    async def admit(self, request: AdmissionRequest) -> AdmissionDecision:
        """Check the workflow's identity and reserve the job's share (the same answer on retry)."""
        return await workflow.execute_activity_method(
            ControlActivities.admit_job, request, **CONTROL_ACTIVITY_OPTIONS
        )

    async def attempt(self, event: str, attempt: int, placement: Placement) -> None:
        """An attempt started or stopped running: GPU-hours and cost accrue in between."""
        if not self.enabled:
            return
        mark = UsageMark(
            workflow_id=self.workflow_id,
            attempt=attempt,
            event=event,  # type: ignore[arg-type]
            at=workflow.now(),
            gpus=sum(node.slots for node in placement.nodes),
            price_per_gpu_hour=placement.master.price_per_slot_hour,
        )
        await workflow.execute_activity_method(
            ControlActivities.record_job_usage, mark, **CONTROL_ACTIVITY_OPTIONS
        )

    async def release(self, reason: str) -> None:
        """The job is over, whichever way: its reservation goes (once)."""
        if not self.enabled or self._released:
            return
        self._released = True
        release = AdmissionRelease(workflow_id=self.workflow_id, reason=reason, at=workflow.now())
        await workflow.execute_activity_method(
            ControlActivities.release_admission, release, **CONTROL_ACTIVITY_OPTIONS
        )
