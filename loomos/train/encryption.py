"""Encrypted checkpoints, on the training side: rank 0 seals what torch.save writes, every rank
opens what torch.load reads, with the keyring the node names in the LOOMOS_* contract.

The node worker (checkpoint_config.encryption_enabled) passes the classification and where the
key is: LOOMOS_KEY_PROVIDER, LOOMOS_KEY_FILE and, for aws-kms, LOOMOS_KMS_KEY_ID / _REGION /
_ENDPOINT. Key bytes never pass through the spec, Temporal, or the environment.

A checkpoint's file id (bound into every chunk) is `<job id>/<file name>`: a checkpoint of another
job, or of another step renamed into place, does not open. The format is
loomos.security.crypto.stream's; this module only ties it to checkpoints. A file that does not
authenticate is an IntegrityError, which the loader treats like any corrupt checkpoint (skip it,
load the one before); a missing key is KeyUnavailable, which it raises, because skipping would
silently restart training from scratch.

Standard library only at import; cryptography and zstandard are imported on first use, in the
processes of jobs that encrypt.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from loomos.train.contract import (
    ENV_CHECKPOINT_ENCRYPTION,
    ENV_KEY_FILE,
    ENV_KEY_PROVIDER,
    ENV_KMS_ENDPOINT,
    ENV_KMS_KEY_ID,
    ENV_KMS_REGION,
)

MAGIC = b"\x89LOOMENC"  # loomos.security.crypto.header.MAGIC, without importing cryptography


class NotEncrypted(Exception):
    """A plaintext checkpoint where this job's must be encrypted (skipped, never loaded)."""


@dataclass(frozen=True)
class CheckpointEncryption:
    """How this job's checkpoints are sealed, from the contract's variables."""

    classification: str
    provider: str
    key_file: str
    kms_key_id: str | None = None
    kms_region: str | None = None
    kms_endpoint: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CheckpointEncryption | None:
        env = os.environ if env is None else env
        classification = env.get(ENV_CHECKPOINT_ENCRYPTION, "").strip()
        if not classification:
            return None
        key_file = env.get(ENV_KEY_FILE, "").strip()
        if not key_file:
            raise ValueError(f"{ENV_CHECKPOINT_ENCRYPTION} is set but {ENV_KEY_FILE} is not")
        return cls(
            classification=classification,
            provider=env.get(ENV_KEY_PROVIDER, "").strip() or "local",
            key_file=key_file,
            kms_key_id=env.get(ENV_KMS_KEY_ID) or None,
            kms_region=env.get(ENV_KMS_REGION) or None,
            kms_endpoint=env.get(ENV_KMS_ENDPOINT) or None,
        )

    def as_env(self) -> dict[str, str]:
        """The contract's variables for this configuration (what the node worker sets)."""
        env = {
            ENV_CHECKPOINT_ENCRYPTION: self.classification,
            ENV_KEY_PROVIDER: self.provider,
            ENV_KEY_FILE: self.key_file,
        }
        for name, value in (
            (ENV_KMS_KEY_ID, self.kms_key_id),
            (ENV_KMS_REGION, self.kms_region),
            (ENV_KMS_ENDPOINT, self.kms_endpoint),
        ):
            if value:
                env[name] = value
        return env


class CheckpointCipher:
    """Seals and opens one job's checkpoint files (the key provider is opened on first use)."""

    def __init__(self, config: CheckpointEncryption | None, job_id: str | None) -> None:
        self.config = config
        self.job_id = job_id or "-"
        self._provider: Any = None

    @property
    def required(self) -> bool:
        return self.config is not None

    @property
    def provider(self) -> Any:
        if self._provider is None and self.config is not None:
            from loomos.security.crypto.keys import open_key_provider

            c = self.config
            self._provider = open_key_provider(
                c.provider, c.key_file, kms_key_id=c.kms_key_id, kms_region=c.kms_region,
                kms_endpoint=c.kms_endpoint,
            )  # fmt: skip
        return self._provider

    def file_id(self, name: str) -> str:
        return f"{self.job_id}/{name}"

    def seal(self, fh: BinaryIO, name: str, save: Callable[[Any], None]) -> None:
        """Run `save(file object)` (torch.save) with what it writes sealed into `fh`."""
        from loomos.security.crypto.stream import EncryptingWriter

        assert self.config is not None
        with EncryptingWriter(
            fh, self.provider, self.file_id(name), classification=self.config.classification
        ) as out:
            save(out)

    @contextlib.contextmanager
    def opened(self, source: str | bytes, name: str) -> Iterator[Any]:
        """What torch.load reads for a store's `source` (a local path or an S3 object's bytes):
        the plaintext, authenticated chunk by chunk. Raises NotEncrypted for a plaintext file
        when this job's checkpoints must be encrypted; IntegrityError for a tampered one."""
        with contextlib.ExitStack() as stack:
            fh: BinaryIO = (
                io.BytesIO(source) if isinstance(source, bytes) else stack.enter_context(open(source, "rb"))
            )
            head = fh.read(len(MAGIC))
            fh.seek(0)
            if head != MAGIC:
                if self.required:
                    raise NotEncrypted(f"{name} is not encrypted, and this job's checkpoints must be")
                yield source if isinstance(source, str) else fh
                return
            from loomos.security.crypto.stream import DecryptingReader

            reader = DecryptingReader(fh, self.provider, self.file_id(name))
            yield reader
            # What torch.load did not read is authenticated too: nothing in the file goes unchecked.
            reader.verify_unread()
