"""Refresh: ask providers for fresh offers and write a new catalog in one atomic step.

A provider that fails keeps its previous rows (and its previous as_of), with the failure
recorded in its metadata; the file is replaced only once everything is assembled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from loomos.marketplace.catalog import (
    SHIPPED_CATALOG,
    Catalog,
    ProviderMeta,
    read_catalog_file,
    user_catalog_path,
    write_catalog_atomic,
)
from loomos.marketplace.integrity import apply_rules
from loomos.marketplace.offers import RejectedRow
from loomos.marketplace.providers.base import OfferSource, ProgressHook, ProviderError, no_progress


@dataclass
class ProviderOutcome:
    provider: str
    ok: bool
    rows: int
    rejected: list[RejectedRow] = field(default_factory=list)
    error: str | None = None


@dataclass
class RefreshReport:
    path: Path
    outcomes: list[ProviderOutcome]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


def refresh_catalog(
    sources: Sequence[OfferSource],
    path: Path | None = None,
    progress_for: Callable[[str], ProgressHook] = lambda name: no_progress,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RefreshReport:
    """Fetch from every source, merge into the current catalog and write it to `path`
    (default: the user catalog). The starting point is the existing file at `path`, else the
    shipped snapshot, so rows of providers not refreshed (or failing) are carried over."""
    target = path or user_catalog_path()
    base: Catalog = read_catalog_file(target if target.exists() else SHIPPED_CATALOG)
    offers = [o for o in base.offers if o.provider != "onprem"]
    providers = {n: m for n, m in base.providers.items() if n != "onprem"}
    outcomes: list[ProviderOutcome] = []
    for source in sources:
        try:
            result = source.fetch(progress_for(source.name))
        except ProviderError as exc:
            outcomes.append(ProviderOutcome(source.name, False, 0, error=str(exc)))
            meta = providers.get(source.name)
            if meta is not None:
                meta.last_error, meta.last_error_at = str(exc), now()
            continue
        good, rejected = apply_rules(result.offers, now())
        rejected = result.rejected + rejected
        if not good:
            # Everything came back broken: treat as a failure rather than empty the provider.
            error = f"{source.name}: every row was rejected ({len(rejected)} rows)"
            outcomes.append(ProviderOutcome(source.name, False, 0, rejected, error))
            if (meta := providers.get(source.name)) is not None:
                meta.last_error, meta.last_error_at = error, now()
            continue
        offers = [o for o in offers if o.provider != source.name] + good
        providers[source.name] = ProviderMeta(
            as_of=result.as_of,
            source=result.source,
            fetched_at=result.fetched_at,
            note=result.note,
            rejected=rejected,
        )
        outcomes.append(ProviderOutcome(source.name, True, len(good), rejected))
    write_catalog_atomic(Catalog(offers=offers, providers=providers, origin=str(target)), target)
    return RefreshReport(target, outcomes)
