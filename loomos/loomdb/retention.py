"""Retention: archive old periods to JSON Lines (gzip) on file:// or s3://, then drop them.

A period is one calendar month of recorded_at (one partition on Postgres). Because recorded_at
never decreases with position, a month is a contiguous range of positions, and archiving the
oldest months first keeps the hot table a suffix of the chain. Each archive's manifest stores
its first prev_hash and last hash, so `verify` links the chain across the archive boundary (and
with `deep_archives=True` re-hashes every archived event). Each archived period is recorded as
a `compliance.retention.applied` event.

Retention days (default, per type, per compliance level, or the event's own override) say how
long an event must be kept anywhere; the manifest's `expires_at` is the latest such date of
its events. Once it has passed (by the store's clock, never a caller's `now`), retention deletes
the archive object (`purge_expired_archives`, default on): file:// unlinks, s3:// DeleteObject,
an object already gone is fine. The object goes first and the manifest is marked afterwards
(`purged_at`, with a `compliance.retention.purged` event in the same transaction), so a failed
delete leaves the manifest unpurged and a crash in between is finished by the next run. The
manifest stays: its first prev_hash and last hash keep linking the chain, and deep verification
(`deep_archive`) skips a purged period's events, which no longer exist anywhere, while still
reporting an object that went missing before its expiry.

`compress_after_days` (Postgres): a month older than that, not yet archived, is rewritten into a
new partition whose data and metadata columns use LZ4 compression (values are decompressed and
recompressed on the way, since VACUUM FULL and CLUSTER keep stored values as they are), then
swapped in within one transaction; the content, and so the hash chain, is unchanged. SQLite has
no per-table compression: the setting does nothing there.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loomos.loomdb.archives import (
    ArchiveMissing,
    DeepArchive,
    archive_manifests,
    deep_archive,
    delete_object,
    encode_archive,
    parse_ts,
    read_archive,
    read_object,
    write_object,
)
from loomos.loomdb.canonical import iso
from loomos.loomdb.errors import RetentionError
from loomos.loomdb.hashchain import EVENT_COLUMNS
from loomos.loomdb.periods import month_start, next_month, period_label
from loomos.models.events import EVENT_TYPE_PATTERN, NewEvent

if TYPE_CHECKING:
    from loomos.loomdb.store import EventStore

RETENTION_EVENT = "compliance.retention.applied"
PURGE_EVENT = "compliance.retention.purged"

__all__ = [
    "PURGE_EVENT",
    "RETENTION_EVENT",
    "ArchiveMissing",
    "DeepArchive",
    "RetentionPolicy",
    "apply_retention",
    "archive_manifests",
    "deep_archive",
    "delete_object",
    "encode_archive",
    "purge_expired",
    "read_archive",
    "read_object",
    "write_object",
]


class RetentionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_days: int = Field(2555, ge=1, le=36500, description="7 years")
    per_type: dict[str, int] = Field(default_factory=dict, description="event type or prefix (security.*)")
    per_compliance_level: dict[str, int] = Field(default_factory=dict)
    archive_after_days: int = Field(90, ge=1, le=36500)
    compress_after_days: int | None = Field(None, ge=1, le=36500)
    archive_uri: str = Field(description="file:///dir or s3://bucket/prefix")
    purge_expired_archives: bool = Field(
        True, description="delete archive objects whose events have all passed their retention"
    )

    @model_validator(mode="after")
    def _consistent(self) -> RetentionPolicy:
        for t, days in self.per_type.items():
            base = t[:-2] if t.endswith(".*") else t
            if not re.fullmatch(EVENT_TYPE_PATTERN, base) and not re.fullmatch(r"[a-z][a-z0-9_]*", base):
                raise ValueError(f"per_type: {t!r} is not an event type or prefix")
            if not 1 <= days <= 36500:
                raise ValueError(f"per_type[{t}]: days must be between 1 and 36500")
        for level, days in self.per_compliance_level.items():
            if not 1 <= days <= 36500:
                raise ValueError(f"per_compliance_level[{level}]: days must be between 1 and 36500")
        if self.compress_after_days is not None and self.compress_after_days > self.archive_after_days:
            raise ValueError("compress_after_days must not exceed archive_after_days")
        scheme = urlparse(self.archive_uri).scheme
        if scheme not in ("file", "s3"):
            raise ValueError(
                f"archive_uri must be file:///dir or s3://bucket/prefix, not {self.archive_uri!r}"
            )
        if scheme == "s3" and not urlparse(self.archive_uri).netloc:
            raise ValueError("archive_uri s3:// needs a bucket")
        return self

    def days_for(self, row: dict[str, Any]) -> int:
        """The event's own override wins; otherwise the longest applicable policy (keeping an
        event too long is recoverable, deleting it too early is not)."""
        if row.get("retention_days"):
            return int(row["retention_days"])
        etype = row["event_type"]
        specific = [
            d
            for t, d in self.per_type.items()
            if t == etype or (t.endswith(".*") and etype.startswith(t[:-1]))
        ]
        level = row.get("compliance_level")
        if level and level in self.per_compliance_level:
            specific.append(self.per_compliance_level[level])
        return max(specific) if specific else self.default_days


# --- applying a policy ----------------------------------------------------------------------


def _periods(store: EventStore, before: datetime) -> list[datetime]:
    """Start of each month with events recorded before `before`, oldest first."""
    with store.backend.read() as cur:
        cur.execute(
            store.backend.sql("SELECT min(recorded_at) FROM loomdb_events WHERE recorded_at < %s"),
            [store.backend.ts(before)],
        )
        first = cur.fetchone()[0]
    if first is None:
        return []
    if isinstance(first, str):
        first = datetime.fromisoformat(first)
    out = []
    m = month_start(first)
    while next_month(m) <= before:
        out.append(m)
        m = next_month(m)
    return out


def apply_retention(
    store: EventStore, policy: RetentionPolicy, now: datetime | None = None, *, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Archive and drop every whole month older than `archive_after_days`, oldest first; compress
    (Postgres); then delete the archive objects that have expired. Returns what was done (also
    recorded as compliance.retention.applied and compliance.retention.purged events). With
    `dry_run` nothing is written or deleted: the actions that would be taken come back, each
    with "dry_run": True (a period archived now whose events have all expired shows as
    archived and purged)."""
    now = now or store.clock()
    # Never the month the store is writing in (by its own clock), whatever `now` says: its own
    # retention records go there, and a month archived while it still grows would be archived
    # again, in part, on the next run.
    writing = month_start(store.clock())
    cutoff = min(now - timedelta(days=policy.archive_after_days), writing)
    actions: list[dict[str, Any]] = []
    planned_purges: list[dict[str, Any]] = []  # dry run: periods archived now that expired already
    for start in _periods(store, cutoff):
        if dry_run:
            plan = _plan_period(store, policy, start, next_month(start), now)
            actions.extend(a for a in plan if a["action"] == "archived")
            planned_purges.extend(a for a in plan if a["action"] == "purged")
            continue
        action = _archive_period(store, policy, start, next_month(start))
        if action is not None:
            actions.append(action)
    if policy.compress_after_days is not None and store.backend.compresses_partitions:
        for start in _periods(store, min(now - timedelta(days=policy.compress_after_days), writing)):
            action = _compress_period(store, policy, start, dry_run=dry_run)
            if action is not None:
                actions.append(action)
    if policy.purge_expired_archives:
        actions.extend(purge_expired(store, now, dry_run=dry_run))
        actions.extend(planned_purges)
    return actions


def _plan_period(
    store: EventStore, policy: RetentionPolicy, start: datetime, end: datetime, now: datetime
) -> list[dict[str, Any]]:
    """What archiving one period would do, read without writing anything."""
    b = store.backend
    period = period_label(start)
    with b.read() as cur:
        cur.execute(
            store.backend.sql(
                "SELECT position, event_type, compliance_level, retention_days, recorded_at "
                "FROM loomdb_events WHERE recorded_at >= %s AND recorded_at < %s ORDER BY position"
            ),
            [b.ts(start), b.ts(end)],
        )
        names = ("position", "event_type", "compliance_level", "retention_days", "recorded_at")
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    if not rows:
        return []
    for r in rows:
        r["recorded_at"] = parse_ts(r["recorded_at"])
    first, last = int(rows[0]["position"]), int(rows[-1]["position"])
    expires = max(r["recorded_at"] + timedelta(days=policy.days_for(r)) for r in rows)
    uri = f"{policy.archive_uri.rstrip('/')}/{_object_name(store.schema_name, period, first, last)}"
    common = {"partition": period, "first_position": first, "last_position": last, "event_count": len(rows)}
    out = [{"action": "archived", **common, "uri": uri, "expires_at": iso(expires), "dry_run": True}]
    if policy.purge_expired_archives and expires <= min(now, store.clock()):
        out.append({"action": "purged", **common, "uri": uri, "expires_at": iso(expires), "dry_run": True})
    return out


def _compress_period(
    store: EventStore, policy: RetentionPolicy, start: datetime, *, dry_run: bool = False
) -> dict[str, Any] | None:
    period = period_label(start)
    with store.backend.write() as cur:
        count = store.backend.compress_period(cur, start, dry_run)
        if count is None:
            return None  # archived already, or compressed already
        if dry_run:
            return {"action": "compressed", "partition": period, "event_count": count, "dry_run": True}
        action = {"action": "compressed", "partition": period, "event_count": count}
        record = NewEvent(
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"loomdb:{store.schema_name}:compress:{period}"),
            event_type=RETENTION_EVENT,
            stream_id="loomdb-retention",
            data={**action, "policy": policy.model_dump(mode="json")},
            context={"compliance_level": "SYSTEM"},
            tags=["retention"],
        )
        store.group_commit.append_locked(
            cur, [record], [store.schemas.validate(RETENTION_EVENT, record.data)], None
        )
    return action


def _archive_period(
    store: EventStore, policy: RetentionPolicy, start: datetime, end: datetime
) -> dict[str, Any] | None:
    b = store.backend
    period = period_label(start)
    with b.write() as cur:
        # Holding the head lock keeps the chain still while the period leaves the table.
        b.lock_head(cur)
        cur.execute(
            store.backend.sql(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM loomdb_events "
                "WHERE recorded_at >= %s AND recorded_at < %s "
                "ORDER BY position"
            ),
            [b.ts(start), b.ts(end)],
        )
        rows = [b.py_row(r) for r in cur.fetchall()]
        if not rows:
            b.drop_period(cur, start, end)  # Postgres: an empty partition
            return None
        first, last = rows[0], rows[-1]
        base = policy.archive_uri.rstrip("/")
        uri = f"{base}/{_object_name(store.schema_name, period, first['position'], last['position'])}"
        payload = encode_archive(rows)
        digest = hashlib.sha256(payload).hexdigest()
        write_object(uri, payload)
        # Read it back before anything is dropped: an archive we cannot read is no archive.
        if hashlib.sha256(read_object(uri)).hexdigest() != digest:
            raise RetentionError(
                f"archive {uri} read back differently from what was written; nothing dropped"
            )
        expires = max(r["recorded_at"] + timedelta(days=policy.days_for(r)) for r in rows)
        archived_at = store.clock()
        cur.execute(
            store.backend.sql(
                "INSERT INTO loomdb_archives (period, first_position, last_position, first_prev_hash, "
                "last_hash, "
                "event_count, uri, sha256, period_start, period_end, archived_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ),
            [
                period,
                first["position"],
                last["position"],
                first["prev_hash"],
                last["hash"],
                len(rows),
                uri,
                digest,
                b.ts(start),
                b.ts(end),
                b.ts(archived_at),
                b.ts(expires),
            ],
        )
        b.drop_period(cur, start, end)
        action = {
            "action": "archived",
            "partition": period,
            "first_position": int(first["position"]),
            "last_position": int(last["position"]),
            "event_count": len(rows),
            "uri": uri,
            "sha256": digest,
        }
        record = NewEvent(
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"loomdb:{store.schema_name}:retention:{period}"),
            event_type=RETENTION_EVENT,
            stream_id="loomdb-retention",
            data={**action, "policy": policy.model_dump(mode="json"), "expires_at": iso(expires)},
            context={"compliance_level": "SYSTEM"},
            tags=["retention"],
        )
        # In the same transaction as the drop: the record exists exactly when the period is gone.
        store.group_commit.append_locked(
            cur, [record], [store.schemas.validate(RETENTION_EVENT, record.data)], None
        )
    return action


def utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def _object_name(schema: str, period: str, first: int, last: int) -> str:
    return f"loomdb-{schema}-{period}-{first}-{last}.jsonl.gz"


# --- purging expired archive objects --------------------------------------------------------


def _purge_id(store: EventStore, period: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"loomdb:{store.schema_name}:purge:{period}")


def _check_purgeable(m: dict[str, Any]) -> None:
    """Only ever delete what retention wrote: an object named after this manifest's period and
    positions, on file:// or s3:// (a manifest row pointing elsewhere is refused, not obeyed)."""
    u = urlparse(m["uri"])
    name = u.path.rsplit("/", 1)[-1]
    pattern = (
        rf"loomdb-.+-{re.escape(m['period'])}-{int(m['first_position'])}-{int(m['last_position'])}\.jsonl\.gz"
    )
    if (
        u.scheme not in ("file", "s3")
        or (u.scheme == "s3" and not u.netloc)
        or not re.fullmatch(pattern, name)
    ):
        raise RetentionError(
            f"archive {m['period']}: refusing to delete {m['uri']!r}, which is not an archive object "
            "retention wrote for this manifest; nothing deleted"
        )


def purge_expired(
    store: EventStore, now: datetime | None = None, *, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Delete the archive object of every manifest whose expires_at has passed, oldest first, and
    mark the manifest purged with a compliance.retention.purged event (deterministic id, so a
    retried run never records a purge twice). Expiry is judged by the store's clock even when
    `now` is later: deleting early cannot be undone. The object is deleted before the manifest
    is marked: a failed delete raises RetentionError and leaves the manifest as it was."""
    clock_now = store.clock()
    now = min(now, clock_now) if now is not None else clock_now
    actions = []
    for m in archive_manifests(store):
        if m["purged_at"] is not None or m["expires_at"] > now:
            continue
        _check_purgeable(m)
        action: dict[str, Any] = {
            "action": "purged",
            "partition": m["period"],
            "first_position": int(m["first_position"]),
            "last_position": int(m["last_position"]),
            "event_count": int(m["event_count"]),
            "uri": m["uri"],
            "sha256": m["sha256"],
            "expires_at": iso(m["expires_at"]),
        }
        if dry_run:
            actions.append({**action, "dry_run": True})
            continue
        try:
            existed = delete_object(m["uri"])
        except RetentionError as exc:
            raise RetentionError(f"{exc}; the manifest of {m['period']} stays unpurged") from exc
        done = mark_purged(store, m, {**action, "object": "deleted" if existed else "already missing"})
        if done is not None:
            actions.append(done)
    return actions


def mark_purged(store: EventStore, m: dict[str, Any], action: dict[str, Any]) -> dict[str, Any] | None:
    """Mark the manifest `m` purged and record `action` as a compliance.retention.purged event,
    in one transaction; None when another run marked it first."""
    b = store.backend
    with store.backend.write() as cur:
        b.lock_head(cur)  # one retention writer at a time, as for archiving
        cur.execute(
            store.backend.sql("SELECT purged_at FROM loomdb_archives WHERE period = %s"), [m["period"]]
        )
        row = cur.fetchone()
        if row is None or row[0] is not None:
            return None  # another run got there first
        purged_at = store.clock()
        cur.execute(
            store.backend.sql(
                "UPDATE loomdb_archives SET purged_at = %s WHERE period = %s AND purged_at IS NULL"
            ),
            [b.ts(purged_at), m["period"]],
        )
        action = {**action, "purged_at": iso(purged_at)}
        record = NewEvent(
            event_id=_purge_id(store, m["period"]),
            event_type=PURGE_EVENT,
            stream_id="loomdb-retention",
            data=action,
            context={"compliance_level": "SYSTEM"},
            tags=["retention"],
        )
        # Same transaction as the mark: the manifest is purged exactly when the event exists.
        store.group_commit.append_locked(
            cur, [record], [store.schemas.validate(PURGE_EVENT, record.data)], None
        )
    return action
