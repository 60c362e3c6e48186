"""The interface every provider module implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from loomos.marketplace.offers import Offer, RejectedRow

# Called as progress(done, total, what) while a source works through its regions/pages.
ProgressHook = Callable[[int, int, str], None]


def no_progress(done: int, total: int, what: str) -> None:
    return None


@dataclass
class FetchResult:
    """What one provider returned: parsed offers, rows it could not parse, and provenance."""

    provider: str
    offers: list[Offer]
    source: str
    as_of: str
    fetched_at: datetime
    rejected: list[RejectedRow] = field(default_factory=list)
    note: str = ""


class ProviderError(Exception):
    """A provider could not be queried at all (credentials, API errors, unusable response)."""


class OfferSource(Protocol):
    name: str

    def fetch(self, progress: ProgressHook = no_progress) -> FetchResult:
        """Query the provider and return its GPU offers. Raises ProviderError when nothing
        usable came back; rows that fail to parse go to FetchResult.rejected instead."""
        ...
