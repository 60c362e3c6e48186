"""The offer model: one rentable machine shape at one place and price.

Offers are frozen slotted dataclasses rather than pydantic models because the optimizer
scans tens of thousands of them per request; validation happens once, in `integrity`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

PROVIDERS = ("aws", "gcp", "azure", "onprem")


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """What a GPU type is: memory options per GPU and the most that fit in one machine."""

    memory_gb: tuple[float, ...]
    max_per_node: int


# Nominal (marketing) memory per GPU. Sources report slightly different figures
# (AWS gives 22888 MiB for an L4), so parsers snap to these and integrity checks a tolerance.
GPU_SPECS: dict[str, GpuSpec] = {
    "B200": GpuSpec((180.0, 192.0), 8),
    "H200": GpuSpec((141.0,), 8),
    "H100": GpuSpec((80.0, 94.0), 8),
    "A100-80GB": GpuSpec((80.0,), 16),
    "A100-40GB": GpuSpec((40.0,), 16),
    "L40S": GpuSpec((48.0,), 8),
    "L4": GpuSpec((24.0,), 8),
    "A10G": GpuSpec((24.0,), 8),
    "A10": GpuSpec((24.0,), 8),
    "V100": GpuSpec((16.0, 32.0), 8),
    "T4": GpuSpec((16.0,), 8),
}
MEMORY_TOLERANCE = 0.12

_ALIASES = [
    # (pattern over a lower-cased, separator-free name, normalised type or None = decide by memory)
    (re.compile(r"b200"), "B200"),
    (re.compile(r"h200"), "H200"),
    (re.compile(r"h100"), "H100"),
    (re.compile(r"a10080gb|a100sxm80|a10080g"), "A100-80GB"),
    (re.compile(r"a10040gb|a10040g"), "A100-40GB"),
    (re.compile(r"a100"), None),
    (re.compile(r"l40s"), "L40S"),
    (re.compile(r"a10g"), "A10G"),
    (re.compile(r"l4"), "L4"),
    (re.compile(r"a10"), "A10"),
    (re.compile(r"v100"), "V100"),
    (re.compile(r"t4"), "T4"),
]


def normalise_gpu_name(name: str, memory_gb: float | None = None) -> str | None:
    """Map a provider's GPU name ("nvidia-tesla-a100", "NVIDIA H100 80GB HBM3", "A100" with
    40960 MiB) onto the catalog's names. Returns None for a GPU the catalog does not know."""
    key = re.sub(r"[^a-z0-9]", "", name.lower()).replace("nvidia", "").replace("tesla", "")
    for pattern, gpu in _ALIASES:
        if pattern.search(key):
            if gpu is not None:
                return gpu
            # A bare "A100": the variant is told apart by memory; GCP's plain
            # "nvidia-tesla-a100" is the 40 GB part.
            if memory_gb is not None and memory_gb > 60:
                return "A100-80GB"
            return "A100-40GB"
    return None


def nominal_gpu_memory(gpu_type: str, reported_gb: float | None) -> float | None:
    """Snap a reported per-GPU memory figure to the type's nominal one (when within tolerance)."""
    spec = GPU_SPECS.get(gpu_type)
    if spec is None:
        return reported_gb
    if reported_gb is None:
        return spec.memory_gb[0]
    for nominal in spec.memory_gb:
        if abs(reported_gb - nominal) <= MEMORY_TOLERANCE * nominal:
            return nominal
    return reported_gb


def parse_time(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return _parse_iso(value)


@lru_cache(maxsize=4096)
def _parse_iso(value: str) -> datetime:
    # Rows of one refresh share their fetched_at: caching makes loading large catalogs cheaper.
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class MachineShape(Protocol):
    """What a provider's description of a machine type says about its GPUs, CPUs and memory."""

    gpu_type: str
    gpu_count: int
    gpu_memory_gb: float
    vcpus: float
    memory_gb: float


@dataclass(frozen=True, slots=True)
class Offer:
    """One machine shape at one place. Prices are USD per hour for the whole machine.

    `zone` is None where the source prices a region as a whole (the zone is picked at
    launch); spot rows from AWS carry their zone because spot prices differ per zone.
    `capacity_nodes` bounds how many such machines exist (owned pools); None = the cloud's
    quota decides. `stale_prone` marks rows whose public price is known to move (AWS cut
    P4/P5 prices by up to 45% in June 2025), so displays can say so.
    """

    provider: str
    region: str
    zone: str | None
    instance_type: str
    gpu_type: str
    gpu_count: int
    gpu_memory_gb: float
    vcpus: float
    memory_gb: float
    price_on_demand: float
    price_spot: float | None
    source: str
    fetched_at: datetime
    stale_prone: bool = False
    capacity_nodes: int | None = None
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "key", f"{self.provider}/{self.region}/{self.zone or '-'}/{self.instance_type}"
        )

    @classmethod
    def of_shape(cls, shape: MachineShape, **where_and_price: Any) -> Offer:
        """An offer of a machine shape a provider described, at a place and price (the other
        fields, as keywords)."""
        return cls(
            gpu_type=shape.gpu_type,
            gpu_count=shape.gpu_count,
            gpu_memory_gb=shape.gpu_memory_gb,
            vcpus=shape.vcpus,
            memory_gb=shape.memory_gb,
            **where_and_price,
        )

    def price(self, pricing_model: str) -> float | None:
        return self.price_spot if pricing_model == "spot" else self.price_on_demand

    def age_days(self, now: datetime) -> float:
        return (now - self.fetched_at).total_seconds() / 86400

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("key")
        d["fetched_at"] = self.fetched_at.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Offer:
        """Build from a catalog row. Raises KeyError/TypeError/ValueError on a malformed row;
        callers turn that into a rejected-row report."""
        return cls(
            provider=str(d["provider"]),
            region=str(d["region"]),
            zone=None if d.get("zone") in (None, "") else str(d["zone"]),
            instance_type=str(d["instance_type"]),
            gpu_type=str(d["gpu_type"]),
            gpu_count=_int(d["gpu_count"]),
            gpu_memory_gb=float(d["gpu_memory_gb"]),
            vcpus=float(d["vcpus"]),
            memory_gb=float(d["memory_gb"]),
            price_on_demand=float(d["price_on_demand"]),
            price_spot=None if d.get("price_spot") is None else float(d["price_spot"]),
            source=str(d.get("source", "")),
            fetched_at=parse_time(d["fetched_at"]),
            stale_prone=bool(d.get("stale_prone", False)),
            capacity_nodes=None if d.get("capacity_nodes") is None else _int(d["capacity_nodes"]),
        )


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise TypeError("expected an integer, got a boolean")
    if isinstance(v, float) and not v.is_integer():
        raise ValueError(f"expected an integer, got {v}")
    return int(v)


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row that failed parsing or integrity rules: kept for reports, never used."""

    provider: str
    ident: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"provider": self.provider, "ident": self.ident, "reason": self.reason}
