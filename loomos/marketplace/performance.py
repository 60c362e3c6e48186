"""Relative training throughput per GPU type (A100-40GB = 1.0).

Rough mixed-precision training figures: dense BF16/FP16 tensor throughput damped by memory
bandwidth, in line with commonly reported transformer-training speedups (H100 about 2.5x an
A100, L4 and A10G about a third). They order GPU types; they are not a benchmark of a job.
Callers can pass overrides measured on their own models.
"""

from __future__ import annotations

from collections.abc import Mapping

RELATIVE_THROUGHPUT: dict[str, float] = {
    "B200": 4.5,
    "H200": 3.0,
    "H100": 2.5,
    "A100-80GB": 1.1,
    "A100-40GB": 1.0,
    "L40S": 0.9,
    "V100": 0.45,
    "A10": 0.4,
    "A10G": 0.35,
    "L4": 0.35,
    "T4": 0.15,
}


def gpu_performance(gpu_type: str, overrides: Mapping[str, float] | None = None) -> float:
    """Throughput of one GPU relative to an A100-40GB; unknown types count as 0.1 (ranked last)."""
    if overrides and gpu_type in overrides:
        return overrides[gpu_type]
    return RELATIVE_THROUGHPUT.get(gpu_type, 0.1)
