"""Temporal payload encryption: a PayloadCodec every LoomOS process installs in its data
converter (loomos.temporal.client) when security.crypto.payload_encryption is on.

Job specs travel as workflow and activity inputs, and their environment variables may hold
secrets; with this codec the Temporal server (its database, its history exports) only ever
holds ciphertext. Each payload becomes

    metadata: {"encoding": "binary/encrypted", "encryption-key-id": <key id>,
               "encryption-cipher": "AES-256-GCM"}
    data:     nonce (12 random bytes) || AEAD(payload key, nonce, <the whole Payload proto>,
                                          aad = "loomos-payload-v1" || key id)

where the payload key is HKDF-SHA256(the key id's secret, info "loomos-payload-v1"): the same
keyring as files, but never the same key as any file. The key id in the metadata makes rotation
work: new payloads use the newest key, histories written before stay readable. Payloads that
are not encrypted pass through decode untouched (histories from before encryption was turned
on, search attributes, which the server must read).

Random 96-bit nonces under one key are safe for about 2^32 payloads; rotate keys
(key_rotation_days) well before a deployment writes that many under one key.

The same codec serves the Temporal UI through LoomCtl's codec endpoint (/api/v1/codec), which
is why this module also turns payloads to and from the UI's JSON.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from loomos.security.crypto.algorithms import NONCE_BYTES, Algorithm, aead, algorithm_for
from loomos.security.crypto.errors import IntegrityError
from loomos.security.crypto.settings import Classification

log = logging.getLogger(__name__)
ENCODING = b"binary/encrypted"
META_KEY_ID = "encryption-key-id"
META_CIPHER = "encryption-cipher"
_INFO = b"loomos-payload-v1"
# How often encode looks for a newer key on disk (a rotation elsewhere; a stat call).
CURRENT_KEY_RECHECK_S = 30.0


def payload_key(secret: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)


class EncryptionCodec(PayloadCodec):
    """Encrypts every payload with the key provider's newest key; decrypts by key id.

    Key material is fetched (a file read, or a KMS Decrypt) off the event loop, once per key id
    per process; after that encode and decode are pure CPU, microseconds a payload.
    """

    def __init__(self, provider: Any, classification: Classification | str = Classification.CONFIDENTIAL):
        self.provider = provider
        self.algorithm = algorithm_for(classification)
        if self.algorithm == Algorithm.NONE:
            raise ValueError("payload encryption needs a classification above public")
        self._ciphers: dict[tuple[str, Algorithm], Any] = {}
        self._current: str | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    # --- keys -----------------------------------------------------------------------------------

    def _cipher(self, key_id: str, algorithm: Algorithm) -> Any:
        cached = self._ciphers.get((key_id, algorithm))
        if cached is None:
            secret = self.provider.secret(key_id, context="a Temporal payload")
            cached = self._ciphers[(key_id, algorithm)] = aead(algorithm, payload_key(secret))
        return cached

    def _current_key(self) -> str:
        now = time.monotonic()
        with self._lock:
            if self._current is None or now - self._checked > CURRENT_KEY_RECHECK_S:
                first = self._current is None
                if not first and self.provider.keyring.changed_since_load():
                    self.provider.keys()  # reload: a rotation happened elsewhere
                key_id, _ = self.provider.current()
                self._current, self._checked = key_id, now
                if first and self.provider.due_for_rotation():
                    log.warning(
                        "payload key %s is older than key_rotation_days (%d): run `loomos keys rotate`",
                        key_id,
                        self.provider.rotation.days,
                    )
            return self._current

    async def _ready(self, key_ids: set[tuple[str, Algorithm]]) -> None:
        missing = [k for k in key_ids if k not in self._ciphers]
        if missing:
            await asyncio.to_thread(lambda: [self._cipher(*k) for k in missing])

    # --- the codec ------------------------------------------------------------------------------

    def encode_sync(self, payloads: Sequence[Payload]) -> list[Payload]:
        """encode() without the event loop (the codec endpoint runs it in a thread)."""
        key_id = self._current_key()
        cipher = self._cipher(key_id, self.algorithm)
        aad = _INFO + key_id.encode()
        out = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), aad)
            out.append(
                Payload(
                    metadata={
                        "encoding": ENCODING,
                        META_KEY_ID: key_id.encode(),
                        META_CIPHER: self.algorithm.label.encode(),
                    },
                    data=nonce + sealed,
                )
            )
        return out

    def decode_sync(self, payloads: Sequence[Payload]) -> list[Payload]:
        """decode() without the event loop."""
        return [self._decode_one(p) for p in payloads]

    def _decode_one(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id, algorithm = _key_of(payload)
        cipher = self._cipher(key_id, algorithm)
        from cryptography.exceptions import InvalidTag

        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _INFO + key_id.encode())
        except InvalidTag:
            raise IntegrityError(
                f"a Temporal payload sealed under key {key_id!r} does not authenticate"
            ) from None
        return Payload.FromString(plain)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        key_id = await asyncio.to_thread(self._current_key) if self._current is None else self._current_key()
        await self._ready({(key_id, self.algorithm)})
        return self.encode_sync(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        await self._ready({_key_of(p) for p in payloads if p.metadata.get("encoding") == ENCODING})
        return self.decode_sync(payloads)


def _key_of(payload: Payload) -> tuple[str, Algorithm]:
    try:
        key_id = payload.metadata[META_KEY_ID].decode("ascii")
        algorithm = Algorithm.from_label(payload.metadata[META_CIPHER].decode("ascii"))
    except (KeyError, UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(
            f"an encrypted Temporal payload without a valid key id or cipher: {exc}"
        ) from None
    return key_id, algorithm


def payloads_from_json(body: Any) -> list[Payload]:
    """The Temporal UI's codec request body, {"payloads": [<Payload as proto3 JSON>...]}."""
    from google.protobuf.json_format import ParseDict

    if not isinstance(body, dict) or not isinstance(body.get("payloads"), list):
        raise ValueError('expected {"payloads": [...]}')
    return [ParseDict(item, Payload()) for item in body["payloads"]]


def payloads_to_json(payloads: Sequence[Payload]) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return {"payloads": [MessageToDict(p) for p in payloads]}
