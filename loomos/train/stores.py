"""Where checkpoint files live: a local directory or an S3 prefix, behind one small interface.

A checkpoint is one file, `ckpt-<step, 8+ digits>.pt`, written so that a reader never sees a
partial one under that name: a local store writes a temp file and renames it over; an S3 PUT is
atomic. Every rank loads from the same location, so on several nodes it must be shared (a
shared filesystem or s3://).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

CHECKPOINT_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")
_TEMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}.pt"


class CheckpointStore:
    """Where checkpoint files live: a local directory or an S3 prefix."""

    uri_root: str

    def names(self) -> list[str]:
        raise NotImplementedError

    def write_atomic(self, name: str, data_writer: Any) -> str:
        raise NotImplementedError

    def read(self, name: str) -> bytes | str:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def uri(self, name: str) -> str:
        return f"{self.uri_root.rstrip('/')}/{name}"

    def checkpoints(self) -> list[tuple[int, str]]:
        """(step, name) of every complete checkpoint, newest first."""
        found = []
        for name in self.names():
            m = CHECKPOINT_NAME.match(name)
            if m:
                found.append((int(m.group(1)), name))
        return sorted(found, reverse=True)


class LocalCheckpointStore(CheckpointStore):
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory).expanduser().absolute()
        self.uri_root = self.directory.as_uri()

    def names(self) -> list[str]:
        try:
            return [p.name for p in self.directory.iterdir()]
        except FileNotFoundError:
            return []

    def write_atomic(self, name: str, data_writer: Any) -> str:
        """Write to a temp file in the same directory, fsync, rename over, fsync the directory.

        A crash at any point leaves either the previous set of checkpoints or the new complete
        file, never a partial file under a checkpoint name.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f"{_TEMP_PREFIX}{os.getpid()}-{name}"
        try:
            with open(tmp, "wb") as fh:
                data_writer(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.directory / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return self.uri(name)

    def read(self, name: str) -> str:
        return str(self.directory / name)

    def delete(self, name: str) -> None:
        (self.directory / name).unlink(missing_ok=True)

    def remove_stale_temp_files(self) -> None:
        for name in self.names():
            if name.startswith(_TEMP_PREFIX):
                (self.directory / name).unlink(missing_ok=True)


class S3CheckpointStore(CheckpointStore):
    """Checkpoints under s3://bucket/prefix. A PUT is atomic: readers see all of it or nothing.

    boto3 finds credentials, region and endpoint (AWS_ENDPOINT_URL) the usual way.
    """

    def __init__(self, uri: str) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{uri!r}: no bucket in s3 URI")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri_root = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        import boto3

        self.s3 = boto3.client("s3")

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def names(self) -> list[str]:
        out = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key("")):
            for obj in page.get("Contents", []):
                out.append(obj["Key"].rsplit("/", 1)[-1])
        return out

    def write_atomic(self, name: str, data_writer: Any) -> str:
        buf = io.BytesIO()
        data_writer(buf)
        self.s3.put_object(Bucket=self.bucket, Key=self._key(name), Body=buf.getvalue())
        return self.uri(name)

    def read(self, name: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()

    def delete(self, name: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(name))


def open_store(location: str) -> CheckpointStore:
    """A store for a plain path, a file:// URI or an s3:// URI."""
    if location.startswith("s3://"):
        return S3CheckpointStore(location)
    if location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        parsed = urlparse(location)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{location!r}: file:// URIs must not name a remote host")
        return LocalCheckpointStore(unquote(parsed.path))
    if "://" in location:
        raise ValueError(f"{location!r}: unsupported checkpoint location (use a path, file:// or s3://)")
    return LocalCheckpointStore(location)
