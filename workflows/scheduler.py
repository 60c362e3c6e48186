"""SchedulerWorkflow: one per resource pool (`scheduler-<pool>`).

It owns the pool's truth about nodes and allocations. Node workers register (and re-register
periodically, which doubles as a liveness lease); job workflows ask for a placement and are
answered by a signal back; they release it when their attempt ends. Placement itself is the
pure `loomos.placement` module, so this workflow only keeps state and talks.

Long-lived: it continues-as-new when Temporal suggests it, carrying its state.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from loomos import placement
    from loomos.models.scheduler import (
        ClusterSnapshot,
        NodeInfo,
        NodeLost,
        NodeRecord,
        NodeUsage,
        Placement,
        PlacementDecision,
        PlacementRequest,
        ReleaseRequest,
        SchedulerState,
    )
    from loomos.temporal import names


@workflow.defn(name=names.SCHEDULER_WORKFLOW)
class SchedulerWorkflow:
    @workflow.init
    def __init__(self, state: SchedulerState) -> None:
        # State is set here, not in run, so a signal delivered with the start finds it.
        self.state = state
        self._dirty = True

    @workflow.run
    async def run(self, state: SchedulerState) -> None:
        while True:
            # Wake on any change, and at least every lease period to expire silent nodes.
            try:
                await workflow.wait_condition(
                    lambda: self._dirty or workflow.info().is_continue_as_new_suggested(),
                    timeout=timedelta(seconds=self.state.node_lease_s),
                )
            except TimeoutError:
                pass
            self._dirty = False
            self._expire_silent_nodes()
            await self._reject_unsatisfiable()
            await self._place_queue()
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self.state)

    # --- signals from node workers -----------------------------------------------------------

    @workflow.signal(name=names.REGISTER_NODE)
    def register_node(self, info: NodeInfo) -> None:
        """A node announces itself; repeated announcements renew its lease."""
        now = workflow.now()
        known = self.state.nodes.get(info.node_id)
        info.registered_at = known.info.registered_at if known else now
        self.state.nodes[info.node_id] = NodeRecord(info=info, last_seen=now)
        self._dirty = True

    @workflow.signal(name=names.DEREGISTER_NODE)
    def deregister_node(self, node_id: str) -> None:
        self.state.nodes.pop(node_id, None)
        self._dirty = True

    # --- signals from job workflows ----------------------------------------------------------

    @workflow.signal(name=names.REQUEST_PLACEMENT_SIGNAL)
    def request_placement(self, request: PlacementRequest) -> None:
        if request.job_id in self.state.allocations:
            # A retried request for an attempt we already placed: the job moved on to a new
            # attempt, so the old allocation is stale.
            if self.state.allocations[request.job_id].attempt < request.attempt:
                del self.state.allocations[request.job_id]
            else:
                return
        self.state.queue = [r for r in self.state.queue if r.job_id != request.job_id]
        self.state.queue.append(request)
        self._dirty = True

    @workflow.signal(name=names.RELEASE)
    def release(self, request: ReleaseRequest) -> None:
        """A job's attempt ended (or it left the queue): free its slots."""
        held = self.state.allocations.get(request.job_id)
        if held is not None and held.attempt <= request.attempt:
            del self.state.allocations[request.job_id]
        self.state.queue = [
            r for r in self.state.queue if not (r.job_id == request.job_id and r.attempt <= request.attempt)
        ]
        self._dirty = True

    @workflow.signal(name=names.NODE_LOST)
    def node_lost(self, lost: NodeLost) -> None:
        """A job saw this node stop heartbeating: no new work until it registers again."""
        record = self.state.nodes.get(lost.node_id)
        if record is not None:
            record.available = False
            record.unavailable_reason = lost.reason
        self._dirty = True

    # --- queries -----------------------------------------------------------------------------

    @workflow.query(name=names.SNAPSHOT_QUERY)
    def snapshot(self) -> ClusterSnapshot:
        used = self._used_slots()
        usage = [
            NodeUsage(
                node=r.info,
                used_slots=used.get(node_id, 0),
                jobs=sorted(
                    j for j, p in self.state.allocations.items() if any(a.node_id == node_id for a in p.nodes)
                ),
                available=r.available,
                last_seen=r.last_seen,
            )
            for node_id, r in self.state.nodes.items()
        ]
        total = sum(r.info.slots for r in self.state.nodes.values() if r.available)
        free = sum(max(u.node.slots - u.used_slots, 0) for u in usage if u.available)
        return ClusterSnapshot(
            pool=self.state.pool,
            nodes=usage,
            queue=list(self.state.queue),
            total_slots=total,
            free_slots=free,
        )

    # --- the placement cycle -----------------------------------------------------------------

    def _used_slots(self) -> dict[str, int]:
        used: dict[str, int] = {}
        for p in self.state.allocations.values():
            for a in p.nodes:
                used[a.node_id] = used.get(a.node_id, 0) + a.slots
        return used

    def _expire_silent_nodes(self) -> None:
        horizon = workflow.now() - timedelta(seconds=self.state.node_lease_s)
        for record in self.state.nodes.values():
            if record.available and record.last_seen < horizon:
                record.available = False
                record.unavailable_reason = f"no lease renewal since {record.last_seen.isoformat()}"

    async def _reject_unsatisfiable(self) -> None:
        infos = [r.info for r in self.state.nodes.values()]
        rejected = []
        for request in self.state.queue:
            reason = placement.unsatisfiable_reason(request, infos)
            if reason is not None:
                rejected.append(
                    PlacementDecision(job_id=request.job_id, attempt=request.attempt, rejected_reason=reason)
                )
        if rejected:
            gone = {d.job_id for d in rejected}
            self.state.queue = [r for r in self.state.queue if r.job_id not in gone]
            await self._answer(rejected)

    async def _place_queue(self) -> None:
        if not self.state.queue:
            return
        used = self._used_slots()
        capacity = [
            placement.NodeCapacity(r.info, r.info.slots - used.get(node_id, 0), r.available)
            for node_id, r in self.state.nodes.items()
        ]
        placed = placement.schedule_fifo(self.state.queue, capacity)
        if not placed:
            return
        now = workflow.now()
        decisions = []
        for request, nodes in placed:
            p = Placement(job_id=request.job_id, attempt=request.attempt, nodes=nodes, placed_at=now)
            self.state.allocations[request.job_id] = p
            decisions.append(PlacementDecision(job_id=request.job_id, attempt=request.attempt, placement=p))
        done = {d.job_id for d in decisions}
        self.state.queue = [r for r in self.state.queue if r.job_id not in done]
        await self._answer(decisions, workflow_ids={r.job_id: r.workflow_id for r, _ in placed})

    async def _answer(
        self, decisions: list[PlacementDecision], workflow_ids: dict[str, str] | None = None
    ) -> None:
        async def send(d: PlacementDecision) -> None:
            wid = (workflow_ids or {}).get(d.job_id) or names.job_workflow_id(d.job_id)
            try:
                await workflow.get_external_workflow_handle(wid).signal(names.PLACEMENT_DECIDED, d)
            except Exception as err:  # the job is gone (cancelled, terminated): take back its slots
                workflow.logger.warning("placement answer to %s failed: %s", wid, err)
                held = self.state.allocations.get(d.job_id)
                if held is not None and held.attempt == d.attempt:
                    del self.state.allocations[d.job_id]
                    self._dirty = True

        await asyncio.gather(*(send(d) for d in decisions))
