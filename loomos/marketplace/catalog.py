"""The catalog: offers plus, per provider, where the prices came from and when.

Lookup order: an explicit path, then `LOOMOS_CATALOG_PATH`, then `~/.loomos/catalog.json`
(written by `loomos market refresh`), then the snapshot shipped in the package. Owned pools
(on-prem) are read from their configuration at load time, never stored in the file, so a
change of amortised price takes effect without a refresh.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loomos.marketplace.integrity import apply_rules
from loomos.marketplace.offers import Offer, RejectedRow, parse_time

if TYPE_CHECKING:
    from loomos.marketplace.optimizer import OfferIndex

CATALOG_FORMAT = 1
SHIPPED_CATALOG = Path(__file__).parent / "data" / "catalog.json"
ENV_CATALOG_PATH = "LOOMOS_CATALOG_PATH"
ENV_ONPREM_CONFIG = "LOOMOS_ONPREM_CONFIG"
# Warn when the newest prices of a provider are older than this (days); env overrides.
ENV_MAX_AGE_DAYS = "LOOMOS_CATALOG_MAX_AGE_DAYS"
DEFAULT_MAX_AGE_DAYS = 30.0


class CatalogError(Exception):
    """A catalog or pool configuration that cannot be read; the message says which and why."""


@dataclass
class ProviderMeta:
    """Provenance of one provider's rows."""

    as_of: str
    source: str
    fetched_at: datetime | None = None
    note: str = ""
    rejected: list[RejectedRow] = field(default_factory=list)
    last_error: str | None = None
    last_error_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of,
            "source": self.source,
            "fetched_at": self.fetched_at.isoformat() if self.fetched_at else None,
            "note": self.note,
            "rejected": [r.to_dict() for r in self.rejected],
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
        }

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> ProviderMeta:
        if not isinstance(d, dict):
            raise CatalogError(f"provider {name!r}: metadata must be a mapping")
        return cls(
            as_of=str(d.get("as_of", "")),
            source=str(d.get("source", "")),
            fetched_at=parse_time(d["fetched_at"]) if d.get("fetched_at") else None,
            note=str(d.get("note", "")),
            rejected=[
                RejectedRow(str(r.get("provider", name)), str(r.get("ident", "")), str(r.get("reason", "")))
                for r in d.get("rejected", [])
                if isinstance(r, dict)
            ],
            last_error=d.get("last_error"),
            last_error_at=parse_time(d["last_error_at"]) if d.get("last_error_at") else None,
        )


@dataclass
class Catalog:
    offers: list[Offer]
    providers: dict[str, ProviderMeta]
    origin: str
    shipped: bool = False
    # Rows dropped while loading (malformed or breaking a rule), in addition to those the
    # refresh that wrote the file already dropped (kept in ProviderMeta.rejected).
    load_rejected: list[RejectedRow] = field(default_factory=list)
    _index: Any = field(default=None, repr=False, compare=False)

    def index(self) -> OfferIndex:
        """The columnar view the optimizer ranks over; rebuilt if `offers` was replaced."""
        cached = self._index
        if cached is None or cached[0] is not self.offers or len(cached[1]) != len(self.offers):
            from loomos.marketplace.optimizer import OfferIndex

            self._index = (self.offers, OfferIndex(self.offers))
        return self._index[1]

    def offer(self, key: str) -> Offer | None:
        """The offer with this key (as carried by a PriceRecord), if the catalog still lists it."""
        for o in self.offers:
            if o.key == key:
                return o
        return None

    def rejected(self) -> list[RejectedRow]:
        out = [r for meta in self.providers.values() for r in meta.rejected]
        return out + self.load_rejected

    def oldest_fetch(self) -> datetime | None:
        times = [m.fetched_at for m in self.providers.values() if m.fetched_at]
        return min(times) if times else None

    def stale_providers(self, now: datetime, max_age_days: float) -> list[tuple[str, float]]:
        """Providers whose prices are older than `max_age_days`, with their age in days."""
        out = []
        for name, meta in sorted(self.providers.items()):
            if meta.fetched_at and (age := (now - meta.fetched_at).total_seconds() / 86400) > max_age_days:
                out.append((name, age))
        return out

    def metadata(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for o in self.offers:
            counts[o.provider] = counts.get(o.provider, 0) + 1
        load_rej: dict[str, list[RejectedRow]] = {}
        for r in self.load_rejected:
            load_rej.setdefault(r.provider, []).append(r)
        providers = {}
        for name, meta in sorted(self.providers.items()):
            d = meta.to_dict()
            d["rejected"] = d["rejected"] + [r.to_dict() for r in load_rej.get(name, [])]
            d["rows"] = counts.get(name, 0)
            providers[name] = d
        return {
            "origin": self.origin,
            "shipped": self.shipped,
            "total_rows": len(self.offers),
            "rejected_rows": len(self.rejected()),
            "providers": providers,
        }

    def to_json(self) -> dict[str, Any]:
        """The file form. On-prem rows come from configuration and are not written."""
        return {
            "format": CATALOG_FORMAT,
            "providers": {n: m.to_dict() for n, m in sorted(self.providers.items()) if n != "onprem"},
            "offers": [o.to_dict() for o in self.offers if o.provider != "onprem"],
        }


def user_catalog_path() -> Path:
    env = os.environ.get(ENV_CATALOG_PATH)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".loomos" / "catalog.json"


def max_age_days() -> float:
    raw = os.environ.get(ENV_MAX_AGE_DAYS)
    if not raw:
        return DEFAULT_MAX_AGE_DAYS
    try:
        value = float(raw)
    except ValueError:
        raise CatalogError(f"{ENV_MAX_AGE_DAYS}={raw!r} is not a number of days") from None
    if value <= 0:
        raise CatalogError(f"{ENV_MAX_AGE_DAYS} must be positive, got {raw!r}")
    return value


def parse_catalog(data: Any, origin: str, now: datetime | None = None) -> Catalog:
    """Build a Catalog from its JSON form, applying the integrity rules to every row."""
    now = now or datetime.now(UTC)
    if not isinstance(data, dict) or not isinstance(data.get("offers"), list):
        raise CatalogError(f"{origin}: not a catalog (expected a mapping with an 'offers' list)")
    if data.get("format") != CATALOG_FORMAT:
        raise CatalogError(f"{origin}: catalog format {data.get('format')!r} is not {CATALOG_FORMAT}")
    providers_raw = data.get("providers", {})
    providers_raw = {} if providers_raw is None else providers_raw
    if not isinstance(providers_raw, dict):
        raise CatalogError(f"{origin}: 'providers' must be a mapping")
    providers = {name: ProviderMeta.from_dict(name, meta) for name, meta in providers_raw.items()}
    parsed: list[Offer] = []
    malformed: list[RejectedRow] = []
    for i, row in enumerate(data["offers"]):
        try:
            if not isinstance(row, dict):
                raise TypeError("row is not a mapping")
            parsed.append(Offer.from_dict(row))
        except (KeyError, TypeError, ValueError) as exc:
            prov = str(row.get("provider", "?")) if isinstance(row, dict) else "?"
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            malformed.append(RejectedRow(prov, f"row {i}", f"malformed row: {what}"))
    good, rejected = apply_rules(parsed, now)
    return Catalog(offers=good, providers=providers, origin=origin, load_rejected=malformed + rejected)


def read_catalog_file(path: Path, now: datetime | None = None) -> Catalog:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"catalog {path} is not valid JSON: {exc}") from None
    catalog = parse_catalog(data, str(path), now)
    catalog.shipped = path.resolve() == SHIPPED_CATALOG.resolve()
    return catalog


def resolve_catalog_path(path: str | Path | None = None) -> Path:
    if path is not None:
        return Path(path).expanduser()
    user = user_catalog_path()
    return user if user.exists() or os.environ.get(ENV_CATALOG_PATH) else SHIPPED_CATALOG


def load_catalog(
    path: str | Path | None = None,
    onprem_config: str | Path | None = None,
    now: datetime | None = None,
) -> Catalog:
    """Load the catalog (see the module docstring for the lookup order) and merge owned pools.

    An explicitly configured `LOOMOS_CATALOG_PATH` that does not exist yet falls back to the
    shipped snapshot (a fresh install has not refreshed); an unreadable or corrupt file is an
    error, because silently using other prices would hide it.
    """
    resolved = resolve_catalog_path(path)
    if path is None and not resolved.exists():
        resolved = SHIPPED_CATALOG
    catalog = read_catalog_file(resolved, now)
    config = onprem_config if onprem_config is not None else os.environ.get(ENV_ONPREM_CONFIG)
    if config:
        from loomos.marketplace.providers.onprem import OnPremConfigError, load_onprem

        try:
            result = load_onprem(Path(config).expanduser(), now)
        except OnPremConfigError as exc:
            raise CatalogError(str(exc)) from None
        good, rejected = apply_rules(result.offers, now or datetime.now(UTC))
        catalog.offers = [o for o in catalog.offers if o.provider != "onprem"] + good
        catalog.providers["onprem"] = ProviderMeta(
            as_of=result.as_of,
            source=result.source,
            fetched_at=result.fetched_at,
            note=result.note,
            rejected=result.rejected + rejected,
        )
    return catalog


_CACHE: dict[tuple[Any, ...], Catalog] = {}


def load_catalog_cached(path: str | Path | None = None, onprem_config: str | Path | None = None) -> Catalog:
    """`load_catalog`, reloaded only when a file it reads changes (the API serves from this)."""
    resolved = resolve_catalog_path(path)
    if path is None and not resolved.exists():
        resolved = SHIPPED_CATALOG
    config = onprem_config if onprem_config is not None else os.environ.get(ENV_ONPREM_CONFIG)
    key = (str(resolved), _mtime(resolved), str(config), _mtime(Path(config)) if config else None)
    cached = _CACHE.get(key)
    if cached is None:
        cached = load_catalog(resolved, config or None)
        _CACHE.clear()
        _CACHE[key] = cached
    return cached


def _mtime(p: Path) -> int | None:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return None


def write_catalog_atomic(catalog: Catalog, path: Path) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`, so a
    reader sees the old catalog or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".catalog-", suffix=".json.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(catalog.to_json(), f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
