"""Placement: which nodes a job's ranks go to. Pure and deterministic.

The scheduler workflow calls these functions from workflow code, so they must not read the
clock, randomness or I/O: the same inputs always give the same placement, which is what
makes the scheduler replayable.

This is the first-fit, strict-FIFO policy of the walking skeleton: the head of the queue
is placed first and blocks those behind it, so a large job is never starved by small ones.
A job that spans several nodes gets `gpu_count` slots on each of `nodes` distinct nodes,
all or nothing (a gang).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from loomos.models.scheduler import NodeAssignment, NodeInfo, PlacementRequest


@dataclass(frozen=True)
class NodeCapacity:
    """A node as placement sees it: what it is and how many slots are free right now."""

    info: NodeInfo
    free_slots: int
    available: bool = True


def _matches(request: PlacementRequest, node: NodeInfo) -> bool:
    """Whether the node is the right kind of machine, ignoring what is in use."""
    if request.gpu_type is not None and request.gpu_type != node.gpu_type:
        return False
    if request.gpu_memory_gb is not None and node.accelerator == "cuda":
        if node.gpu_memory_gb < request.gpu_memory_gb:
            return False
    if request.gpu_memory_gb is not None and node.accelerator != "cuda" and request.gpu_type != "cpu":
        # GPU memory was asked for: a CPU node cannot honour it.
        return False
    return True


def unsatisfiable_reason(request: PlacementRequest, nodes: Iterable[NodeInfo]) -> str | None:
    """Why no registered node could ever run this request, even on an idle pool; None if some could.

    With no nodes at all the answer is None: nodes may still register, so the request waits.
    """
    nodes = list(nodes)
    if not nodes:
        return None
    kind = [n for n in nodes if _matches(request, n)]
    if not kind:
        types = sorted({n.gpu_type for n in nodes})
        wanted = request.gpu_type or "any device"
        if request.gpu_memory_gb is not None:
            wanted += f" with >= {request.gpu_memory_gb:g} GB"
        return f"no node in pool '{request.pool}' offers {wanted} (pool has: {', '.join(types)})"
    big_enough = [n for n in kind if n.slots >= request.gpu_count]
    if not big_enough:
        largest = max(n.slots for n in kind)
        return (
            f"no node in pool '{request.pool}' has {request.gpu_count} slots of "
            f"{request.gpu_type or 'any device'} (largest has {largest})"
        )
    if len(big_enough) < request.nodes:
        return (
            f"job needs {request.nodes} nodes with {request.gpu_count} slots each; "
            f"pool '{request.pool}' has only {len(big_enough)}"
        )
    return None


def place(request: PlacementRequest, nodes: Iterable[NodeCapacity]) -> list[NodeAssignment] | None:
    """First fit: the first `request.nodes` matching nodes (in the given order) with room.

    Returns None when the request does not fit now. Node order is the caller's (the scheduler
    keeps registration order), so results are reproducible.
    """
    chosen: list[NodeAssignment] = []
    for cap in nodes:
        if not cap.available or cap.free_slots < request.gpu_count or not _matches(request, cap.info):
            continue
        chosen.append(
            NodeAssignment(
                node_id=cap.info.node_id,
                task_queue=cap.info.task_queue,
                host=cap.info.host,
                slots=request.gpu_count,
                gpu_type=cap.info.gpu_type,
                price_per_slot_hour=cap.info.price_per_slot_hour,
                price=cap.info.price,
            )
        )
        if len(chosen) == request.nodes:
            return chosen
    return None


def schedule_fifo(
    queue: list[PlacementRequest], nodes: list[NodeCapacity]
) -> list[tuple[PlacementRequest, list[NodeAssignment]]]:
    """Place from the head of the queue until the head does not fit (strict FIFO).

    Free capacity is updated as each request is placed, so two requests never share a slot.
    """
    free = {c.info.node_id: c.free_slots for c in nodes}
    placed: list[tuple[PlacementRequest, list[NodeAssignment]]] = []
    for request in queue:
        current = [NodeCapacity(c.info, free[c.info.node_id], c.available) for c in nodes]
        assignment = place(request, current)
        if assignment is None:
            break
        for a in assignment:
            free[a.node_id] -= a.slots
        placed.append((request, assignment))
    return placed
