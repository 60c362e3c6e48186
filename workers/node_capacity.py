"""What a node offers: its GPUs (type, count, memory) or, without GPUs, CPU training slots."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime

from loomos.models.pricing import PriceRecord
from loomos.models.scheduler import NodeInfo
from loomos.settings import Settings
from loomos.temporal.names import node_task_queue

# Marketing names as CUDA reports them -> the normalised names used in specs and catalogs.
_GPU_PATTERNS = [
    (r"H200", "H200"),
    (r"H100", "H100"),
    (r"A100.*80", "A100-80GB"),
    (r"A100", "A100-40GB"),
    (r"L40S", "L40S"),
    (r"L4\b", "L4"),
    (r"A10G", "A10G"),
    (r"A10\b", "A10"),
    (r"V100", "V100"),
    (r"T4\b", "T4"),
]


def normalise_gpu_name(name: str) -> str:
    for pattern, normalised in _GPU_PATTERNS:
        if re.search(pattern, name, re.IGNORECASE):
            return normalised
    return re.sub(r"^NVIDIA\s+", "", name).strip().upper().replace(" ", "-")


def node_id_for(settings: Settings) -> str:
    """node.node_id, else the short host name (so a restarted node worker keeps its queue)."""
    return settings.node.node_id or socket.gethostname().split(".")[0].lower()


class NodeConfigError(ValueError):
    pass


def offer_price(settings: Settings, now: datetime | None = None) -> PriceRecord | None:
    """The price record of node.offer in the catalog in force now (None without an offer).

    Recorded once, when the node starts: placements on the node carry it, so costs use the
    price of that day even after the catalog is refreshed.
    """
    key = settings.node.offer
    if key is None:
        return None
    from loomos.marketplace.catalog import load_catalog
    from loomos.marketplace.estimate import price_record
    from loomos.marketplace.optimizer import MarketInputError

    catalog = load_catalog()
    offer = catalog.offer(key)
    if offer is None:
        raise NodeConfigError(
            f"node.offer: no offer {key!r} in the catalog ({catalog.origin}); "
            "`loomos market offers --json` lists the keys"
        )
    meta = catalog.providers.get(offer.provider)
    as_of = meta.as_of if meta else offer.fetched_at.date().isoformat()
    try:
        return price_record(offer, settings.node.pricing_model, as_of, now or datetime.now(UTC))
    except MarketInputError as err:
        raise NodeConfigError(f"node.pricing_model: {err}") from None


def detect_node(settings: Settings) -> NodeInfo:
    node_id = node_id_for(settings)
    price = offer_price(settings)
    accelerator, gpu_type, slots, memory = "cpu", "cpu", settings.node.cpu_slots, 0.0
    import torch  # imported here: only node workers need it

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        props = torch.cuda.get_device_properties(0)
        accelerator = "cuda"
        gpu_type = normalise_gpu_name(props.name)
        slots = torch.cuda.device_count()
        memory = round(props.total_memory / 2**30, 1)
    return NodeInfo(
        node_id=node_id,
        pool=settings.node.pool,
        task_queue=node_task_queue(node_id),
        host=settings.node.host,
        accelerator=accelerator,
        gpu_type=gpu_type,
        slots=slots,
        gpu_memory_gb=memory,
        price_per_slot_hour=price.price_per_gpu_hour if price else settings.node.price_per_slot_hour,
        price=price,
    )
