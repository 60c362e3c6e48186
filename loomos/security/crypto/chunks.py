"""The chunk records of a LoomOS encrypted stream, shared by its writer and reader (the
format is described in loomos.security.crypto.stream)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from loomos.security.crypto.header import Header

RECORD = struct.Struct(">IB")  # sealed_len, flags
FLAG_ZSTD = 0x01
ZSTD_LEVEL = 1


def chunk_nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


@dataclass
class StreamInfo:
    """What a writer or reader saw: for logs, benchmarks and tests."""

    header: Header
    plaintext_bytes: int = 0
    stored_bytes: int = 0
    chunks: int = 0
    compressed_chunks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def secret_for(provider: Any, key_id: str, file_id: bytes) -> bytes:
    """The key id's secret, with the file id in the error if the keyring lacks it (an operator
    then knows which file needs which key)."""
    if provider is None:
        from loomos.security.crypto.errors import KeyUnavailable

        raise KeyUnavailable(
            f"file id {file_id.decode(errors='replace')!r} is sealed under key {key_id!r}, "
            "and no key provider was given"
        )
    return provider.secret(key_id, context=f"file id {file_id.decode(errors='replace')!r}")
