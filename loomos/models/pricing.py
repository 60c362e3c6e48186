"""PriceRecord: the offer and price a decision used ("price at the time").

Pure (pydantic only), so workflow code and the other wire models can carry it:
estimates record it, node workers started on a catalog offer register with it, placements
copy it, and cost records are computed from it rather than from today's catalog.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PricingModel = Literal["on_demand", "spot"]


class PriceRecord(BaseModel):
    """The offer and price a decision used. Small and JSON-friendly: it travels in Temporal
    payloads and is stored with placements and cost events."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    offer_key: str
    provider: str
    region: str
    zone: str | None
    instance_type: str
    gpu_type: str
    gpus_per_node: int
    pricing_model: PricingModel
    price_per_hour: float = Field(..., gt=0, description="USD per machine-hour")
    currency: str = "USD"
    catalog_as_of: str
    fetched_at: datetime
    recorded_at: datetime
    source: str

    @property
    def price_per_gpu_hour(self) -> float:
        """The recorded price per GPU-hour: what a placement's per-slot price is set from."""
        return self.price_per_hour / self.gpus_per_node


class CostBreakdown(BaseModel):
    compute: float
    storage: float
    network: float
    total: float


class CostEstimate(BaseModel):
    """One ranked option priced out: what `loomos market estimate` and the API return."""

    provider: str
    pricing_model: PricingModel
    option: dict[str, Any]
    breakdown: CostBreakdown
    assumptions: dict[str, Any]
    price_record: PriceRecord
