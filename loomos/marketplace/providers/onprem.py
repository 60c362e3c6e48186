"""Owned GPUs as offers, so a paid-for cluster competes with cloud prices.

The configuration is YAML (path from `LOOMOS_ONPREM_CONFIG` or `--onprem-config`):

    site: dc1                      # becomes the offers' region
    node_types:
      - name: dgx-a100             # instance_type
        gpu_type: A100-80GB
        gpu_count: 8
        vcpus: 128
        memory_gb: 1024
        nodes: 4                   # how many such machines exist
        price_per_gpu_hour: 1.10   # amortised: purchase + power + space + staff, per GPU-hour

Prices are amortised costs, so they are treated as on-demand; there is no spot.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loomos.marketplace.offers import Offer, nominal_gpu_memory, normalise_gpu_name
from loomos.marketplace.providers.base import FetchResult


class OnPremConfigError(Exception):
    pass


class NodeType(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[A-Za-z0-9._-]{1,64}$")
    gpu_type: str
    gpu_count: int = Field(..., ge=1, le=16)
    gpu_memory_gb: float | None = Field(None, gt=0)
    vcpus: float = Field(..., gt=0)
    memory_gb: float = Field(..., gt=0)
    nodes: int = Field(1, ge=1, le=10000)
    price_per_gpu_hour: float = Field(..., gt=0)


class OnPremConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str = Field("onprem", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    node_types: list[NodeType] = Field(..., min_length=1)


def parse_onprem(data: Any, origin: str, fetched_at: datetime) -> FetchResult:
    if not isinstance(data, dict):
        raise OnPremConfigError(f"{origin}: on-prem configuration must be a mapping")
    try:
        config = OnPremConfig.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(
            ".".join(str(p) for p in e["loc"])
            + ": "
            + ("unknown field" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        )
        raise OnPremConfigError(f"{origin}: {errors}") from None
    offers = []
    for i, nt in enumerate(config.node_types):
        gpu = normalise_gpu_name(nt.gpu_type, nt.gpu_memory_gb)
        if gpu is None:
            raise OnPremConfigError(f"{origin}: node_types.{i}.gpu_type: unknown GPU type {nt.gpu_type!r}")
        offers.append(
            Offer(
                provider="onprem",
                region=config.site,
                zone=None,
                instance_type=nt.name,
                gpu_type=gpu,
                gpu_count=nt.gpu_count,
                gpu_memory_gb=nominal_gpu_memory(gpu, nt.gpu_memory_gb) or 0.0,
                vcpus=nt.vcpus,
                memory_gb=nt.memory_gb,
                price_on_demand=round(nt.price_per_gpu_hour * nt.gpu_count, 6),
                price_spot=None,
                source=f"on-prem configuration {origin}",
                fetched_at=fetched_at,
                capacity_nodes=nt.nodes,
            )
        )
    return FetchResult(
        provider="onprem",
        offers=offers,
        source=f"on-prem configuration {origin}",
        as_of=fetched_at.date().isoformat(),
        fetched_at=fetched_at,
        note="amortised cost per GPU-hour from configuration",
    )


def load_onprem(path: Path, now: datetime | None = None) -> FetchResult:
    try:
        text = path.read_text()
        mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError as exc:
        raise OnPremConfigError(f"cannot read on-prem configuration {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OnPremConfigError(f"{path}: not valid YAML: {exc}") from None
    # The file's modification time is when its prices were set; never later than now.
    fetched = min(mtime, now) if now else mtime
    return parse_onprem(data, str(path), fetched)
