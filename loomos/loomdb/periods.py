"""Retention periods: calendar months (UTC) of recorded_at. Postgres keeps one partition per
month; retention archives and drops whole months on both backends."""

from __future__ import annotations

from datetime import UTC, datetime


def month_start(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return datetime(ts.year, ts.month, 1, tzinfo=UTC)


def next_month(ts: datetime) -> datetime:
    return datetime(ts.year + (ts.month == 12), ts.month % 12 + 1, 1, tzinfo=UTC)


def period_label(start: datetime) -> str:
    """The month's name in manifests, actions and archive names: "2026-01"."""
    return f"{start.year:04d}-{start.month:02d}"


def partition_name(start: datetime) -> str:
    """The Postgres partition holding the month that begins at `start`."""
    return f"loomdb_events_y{start.year:04d}m{start.month:02d}"
