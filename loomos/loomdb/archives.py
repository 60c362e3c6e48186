"""Archive objects: one retention period's events as gzip JSON Lines on file:// or s3://, written
before the period is dropped (retention.py), read back by deep verification (verify.py), deleted
once every event in it has expired (retention.purge_expired).

Each line is one event: every EVENT_COLUMNS column, timestamps in canonical.iso's form. Archives
written before hash versions existed have no hash_version: their events are version 1.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from loomos.loomdb.canonical import iso
from loomos.loomdb.errors import RetentionError
from loomos.loomdb.hashchain import EVENT_COLUMNS, HASH_V1

if TYPE_CHECKING:
    from loomos.loomdb.store import EventStore


class ArchiveMissing(RetentionError):
    """The archive object does not exist (as opposed to: cannot be read)."""


def _row_json(row: dict[str, Any]) -> str:
    out = {}
    for c in EVENT_COLUMNS:
        v = row[c]
        if isinstance(v, datetime):
            v = iso(v)
        elif isinstance(v, uuid.UUID):
            v = str(v)
        out[c] = v
    return json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_archive(rows: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    # mtime=0: the same events always give the same bytes (and the same sha256).
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for r in rows:
            gz.write(_row_json(r).encode() + b"\n")
    return buf.getvalue()


def s3_client() -> Any:
    """A boto3 S3 client, made when an s3:// archive is touched (tests substitute it)."""
    import boto3

    return boto3.client("s3")


def write_object(uri: str, payload: bytes) -> None:
    u = urlparse(uri)
    try:
        if u.scheme == "file":
            path = Path(u.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(payload)
            tmp.replace(path)
        elif u.scheme == "s3":
            s3_client().put_object(Bucket=u.netloc, Key=u.path.lstrip("/"), Body=payload)
        else:
            raise RetentionError(f"unsupported archive URI {uri!r}")
    except RetentionError:
        raise
    except Exception as exc:  # OSError, botocore errors: report where and why
        raise RetentionError(f"cannot write archive {uri}: {exc}") from exc


def _s3_not_found(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def read_object(uri: str) -> bytes:
    u = urlparse(uri)
    try:
        if u.scheme == "file":
            return Path(u.path).read_bytes()
        if u.scheme == "s3":
            return s3_client().get_object(Bucket=u.netloc, Key=u.path.lstrip("/"))["Body"].read()
    except FileNotFoundError:
        raise ArchiveMissing(f"archive {uri} does not exist") from None
    except Exception as exc:
        if _s3_not_found(exc):
            raise ArchiveMissing(f"archive {uri} does not exist") from None
        raise RetentionError(f"cannot read archive {uri}: {exc}") from exc
    raise RetentionError(f"unsupported archive URI {uri!r}")


def delete_object(uri: str) -> bool:
    """Delete an archive object; False when it was already gone (deleting is idempotent)."""
    u = urlparse(uri)
    try:
        if u.scheme == "file":
            try:
                Path(u.path).unlink()
            except FileNotFoundError:
                return False
            return True
        if u.scheme == "s3":
            return _delete_s3_versions(s3_client(), u.netloc, u.path.lstrip("/"))
    except Exception as exc:  # OSError, botocore errors
        raise RetentionError(f"cannot delete archive {uri}: {exc}") from exc
    raise RetentionError(f"unsupported archive URI {uri!r}")


def _delete_s3_versions(s3: Any, bucket: str, key: str) -> bool:
    """Delete every version of `key` (and its delete markers). On a versioned bucket a plain
    DeleteObject only adds a delete marker and the archived events stay readable, which a purge
    must not allow; on an unversioned bucket the one version is "null". Needs
    s3:ListBucketVersions and s3:DeleteObjectVersion. True when any version held data."""
    found: list[tuple[str, bool]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        found += [(v["VersionId"], True) for v in page.get("Versions", []) if v["Key"] == key]
        found += [(v["VersionId"], False) for v in page.get("DeleteMarkers", []) if v["Key"] == key]
    for version, _ in found:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    return any(data for _, data in found)


def read_archive(uri: str, sha256: str | None = None) -> Iterator[dict[str, Any]]:
    """Rows of an archive, in position order, as the store returns them (for verify)."""
    payload = read_object(uri)
    if sha256 is not None and hashlib.sha256(payload).hexdigest() != sha256:
        raise RetentionError(f"archive {uri} does not match the sha256 in its manifest")
    try:
        text = gzip.decompress(payload).decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise RetentionError(f"archive {uri} is not gzip JSON Lines: {exc}") from None
    # Lines end at "\n" only: str.splitlines also breaks at U+2028, U+0085 and others, which
    # event text may hold unescaped (the lines are written with ensure_ascii=False).
    for line in text.split("\n"):
        if not line:
            continue
        row = json.loads(line)
        row["occurred_at"] = datetime.fromisoformat(row["occurred_at"])
        row["recorded_at"] = datetime.fromisoformat(row["recorded_at"])
        row["event_id"] = uuid.UUID(row["event_id"])
        row.setdefault("hash_version", HASH_V1)
        yield row


def parse_ts(v: Any) -> datetime:
    """A timestamp as either backend returns it (SQLite: ISO text)."""
    return datetime.fromisoformat(v) if isinstance(v, str) else v


# --- manifests and deep verification --------------------------------------------------------


def archive_manifests(store: EventStore) -> list[dict[str, Any]]:
    """`EventStore.archives()`, timestamps as datetimes on both backends."""
    rows = store.archives()
    for m in rows:
        for k in ("period_start", "period_end", "archived_at", "expires_at", "purged_at"):
            if m[k] is not None:
                m[k] = parse_ts(m[k])
    return rows


@dataclass
class DeepArchive:
    """What deep verification has to re-hash for one manifest: `rows`, or None when the events
    are gone under the policy (then `note` says why and the manifest's hashes link the chain)."""

    rows: list[dict[str, Any]] | None
    note: str | None = None


def deep_archive(store: EventStore, manifest: dict[str, Any], now: datetime | None = None) -> DeepArchive:
    """For `EventStore.verify(deep_archives=True)`: the archived rows of one manifest (as given by
    `EventStore.archives()` or `archive_manifests`). A purged archive has none to re-hash, nor
    has one that expired and whose object is gone (say, removed by a bucket lifecycle rule, or
    a purge interrupted before it marked the manifest). Raises ArchiveMissing for an object
    missing before its expiry (deleted early), and RetentionError for one that cannot be read,
    does not match its sha256, or a manifest marked purged before its expiry."""
    purged_at = manifest["purged_at"] if "purged_at" in manifest else _purged_at(store, manifest["period"])
    expires = parse_ts(manifest["expires_at"])
    if purged_at is not None:
        purged_at = parse_ts(purged_at)
        if purged_at < expires:
            raise RetentionError(
                f"marked purged at {iso(purged_at)}, but its events were to be kept until {iso(expires)}"
            )
        return DeepArchive(
            None, f"purged at {iso(purged_at)} (expired {iso(expires)}); linked by its manifest"
        )
    try:
        return DeepArchive(list(read_archive(manifest["uri"], manifest["sha256"])))
    except ArchiveMissing as exc:
        if expires <= (now or store.clock()):
            return DeepArchive(None, f"{exc}; expired {iso(expires)}, not yet marked purged")
        raise ArchiveMissing(
            f"{exc}, but its events were to be kept until {iso(expires)}: deleted before it expired"
        ) from None


def _purged_at(store: EventStore, period: str) -> datetime | None:
    with store.backend.read() as cur:
        cur.execute(store.backend.sql("SELECT purged_at FROM loomdb_archives WHERE period = %s"), [period])
        row = cur.fetchone()
    return None if row is None or row[0] is None else parse_ts(row[0])
