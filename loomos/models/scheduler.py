"""A pool's scheduler and what it talks about: nodes, placement requests and decisions, the
scheduler workflow's state, and the messages jobs and node workers send it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from loomos.models.pricing import PriceRecord
from loomos.models.spec import JobSpec


class NodeInfo(BaseModel):
    """What a node worker tells its pool's scheduler when it registers."""

    node_id: str
    pool: str
    task_queue: str
    host: str = Field(description="address other nodes of a job reach this one at (MASTER_ADDR)")
    accelerator: str = Field(description="'cuda' or 'cpu'")
    gpu_type: str = Field(description="normalised GPU name (H100, A100-80GB, ...) or 'cpu'")
    slots: int = Field(ge=1, description="GPUs, or CPU training slots on a CPU node")
    gpu_memory_gb: float = 0
    price_per_slot_hour: float | None = Field(None, description="amortised cost, for cost records")
    price: PriceRecord | None = Field(
        None, description="the catalog offer this node runs on and its price when the node started"
    )
    registered_at: datetime | None = None


class PlacementRequest(BaseModel):
    """Input of `request_placement` and of the scheduler's signal of that name."""

    job_id: str
    workflow_id: str
    pool: str
    gpu_count: int
    gpu_type: str | None = None
    gpu_memory_gb: float | None = None
    nodes: int = 1
    priority: int = 50
    attempt: int = 1

    @classmethod
    def for_spec(cls, job_id: str, workflow_id: str, spec: JobSpec, attempt: int) -> PlacementRequest:
        r = spec.resources
        return cls(
            job_id=job_id,
            workflow_id=workflow_id,
            pool=spec.pool,
            gpu_count=max(r.gpu_count, 1),
            gpu_type=r.gpu_type,
            gpu_memory_gb=r.gpu_memory_gb,
            nodes=r.nodes,
            priority=spec.priority,
            attempt=attempt,
        )


class NodeAssignment(BaseModel):
    node_id: str
    task_queue: str
    host: str
    slots: int
    gpu_type: str
    price_per_slot_hour: float | None = None
    # The node's offer and price as recorded when it started: cost records use this price,
    # not the catalog of the day they are computed.
    price: PriceRecord | None = None


class Placement(BaseModel):
    job_id: str
    attempt: int
    nodes: list[NodeAssignment]
    placed_at: datetime

    @property
    def master(self) -> NodeAssignment:
        return self.nodes[0]


class PlacementDecision(BaseModel):
    """The scheduler's answer, signalled back to the job workflow (`placement_decided`)."""

    job_id: str
    attempt: int
    placement: Placement | None = None
    rejected_reason: str | None = None


class ReleaseRequest(BaseModel):
    """Signal `release`: a job's attempt ended (or it left the queue)."""

    job_id: str
    attempt: int


class NodeLost(BaseModel):
    """Signal `node_lost`: a job saw this node stop heartbeating."""

    node_id: str
    reason: str


class NodeRecord(BaseModel):
    info: NodeInfo
    last_seen: datetime
    available: bool = True
    unavailable_reason: str | None = None


class SchedulerState(BaseModel):
    """The scheduler workflow's input and state, carried across continue-as-new."""

    pool: str
    # A node whose lease is older than this is not given new work (it may be dead).
    node_lease_s: float = 60
    nodes: dict[str, NodeRecord] = Field(default_factory=dict)  # registration order
    allocations: dict[str, Placement] = Field(default_factory=dict)  # job id -> placement
    queue: list[PlacementRequest] = Field(default_factory=list)


class NodeUsage(BaseModel):
    node: NodeInfo
    used_slots: int
    jobs: list[str]
    available: bool
    last_seen: datetime | None = None


class ClusterSnapshot(BaseModel):
    """The scheduler's `snapshot` query, and `GET /api/v1/cluster/status`."""

    pool: str
    nodes: list[NodeUsage]
    queue: list[PlacementRequest]
    total_slots: int
    free_slots: int
