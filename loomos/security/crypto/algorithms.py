"""The AEAD algorithms LoomOS encrypts with, and which one each data classification gets.

Policy (the product documents' EncryptionManager): public data is not encrypted; internal and
confidential data get AES-256-GCM (hardware-accelerated with AES-NI, the fast path for large
checkpoints); restricted data gets ChaCha20-Poly1305 (constant-time in software, no reliance on
AES hardware, and a different primitive from the bulk of the data).

Each algorithm has a one-byte code, written into file headers and payload metadata; codes are
never reused.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from loomos.security.crypto.settings import Classification

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class Algorithm(IntEnum):
    NONE = 0
    AES_256_GCM = 1
    CHACHA20_POLY1305 = 2

    @property
    def label(self) -> str:
        return _LABELS[self]

    @classmethod
    def from_label(cls, label: str) -> Algorithm:
        for alg, name in _LABELS.items():
            if name == label:
                return alg
        raise ValueError(f"unknown algorithm {label!r}; known: {sorted(_LABELS.values())}")


_LABELS = {
    Algorithm.NONE: "none",
    Algorithm.AES_256_GCM: "AES-256-GCM",
    Algorithm.CHACHA20_POLY1305: "ChaCha20-Poly1305",
}

_BY_CLASSIFICATION = {
    Classification.PUBLIC: Algorithm.NONE,
    Classification.INTERNAL: Algorithm.AES_256_GCM,
    Classification.CONFIDENTIAL: Algorithm.AES_256_GCM,
    Classification.RESTRICTED: Algorithm.CHACHA20_POLY1305,
}


def algorithm_for(classification: Classification | str) -> Algorithm:
    """The algorithm data of this classification is sealed with."""
    return _BY_CLASSIFICATION[Classification(classification)]


def aead(algorithm: Algorithm, key: bytes) -> Any:
    """cryptography's AEAD object for `algorithm` with a 32-byte key (both release the GIL while
    they work, so a writer thread can overlap with them)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    if len(key) != KEY_BYTES:
        raise ValueError(f"expected a {KEY_BYTES}-byte key, got {len(key)} bytes")
    if algorithm == Algorithm.AES_256_GCM:
        return AESGCM(key)
    if algorithm == Algorithm.CHACHA20_POLY1305:
        return ChaCha20Poly1305(key)
    raise ValueError(f"{algorithm.label} is not an AEAD")
