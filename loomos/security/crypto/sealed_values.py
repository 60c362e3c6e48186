"""Secret environment variables, sealed by LoomCtl before a job reaches Temporal and opened by
the node that runs it.

A JobSpec's `secret_environment_variables` arrive in clear (over LoomCtl's TLS) and must never
be stored in clear: not in Temporal's history, LoomDB's audit trail, logs or API answers. So
LoomCtl replaces each value before the job workflow starts with

    sealed:v1:<key id>:<base64 of nonce (12 bytes) || AES-256-GCM ciphertext>

under a key derived (HKDF-SHA256, info "loomos-secret-env-v1") from the keyring's newest key,
with the job id and the variable's name as associated data: a sealed value cannot be moved to
another job or another variable. The node opens them with the same keyring just before it
starts torchrun, and only the ranks' environment holds them in clear. Payload encryption
(codec.py) is independent: with it on, the sealed values are encrypted once more.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from loomos.security.crypto.errors import CryptoError

PREFIX = "sealed:v1:"
_INFO = b"loomos-secret-env-v1"
_NONCE = 12


class SealedValueError(CryptoError):
    """A sealed value that is malformed, for another job or variable, or under an unknown key."""


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def _aead(secret: bytes) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret))


def _aad(job_id: str, name: str) -> bytes:
    return f"{job_id}\x00{name}".encode()


def seal(value: str, *, job_id: str, name: str, provider: Any) -> str:
    """`value` sealed under the provider's newest key, bound to the job and the variable."""
    key_id, secret = provider.current()
    nonce = os.urandom(_NONCE)
    sealed = _aead(secret).encrypt(nonce, value.encode(), _aad(job_id, name))
    return f"{PREFIX}{key_id}:{base64.b64encode(nonce + sealed).decode()}"


def unseal(value: str, *, job_id: str, name: str, provider: Any) -> str:
    """The clear value of a sealed one; SealedValueError naming the variable otherwise."""
    if not is_sealed(value):
        raise SealedValueError(f"secret variable {name} is not sealed (LoomCtl seals them at submission)")
    key_id, _, blob = value.removeprefix(PREFIX).partition(":")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise SealedValueError(f"secret variable {name}: the sealed value is not base64") from None
    secret = provider.secret(key_id, context=f"secret variable {name}")
    from cryptography.exceptions import InvalidTag

    try:
        return _aead(secret).decrypt(raw[:_NONCE], raw[_NONCE:], _aad(job_id, name)).decode()
    except (InvalidTag, ValueError):
        raise SealedValueError(
            f"secret variable {name}: the sealed value does not open for job {job_id} (altered, or "
            "sealed for another job or variable)"
        ) from None


def seal_all(values: dict[str, str], *, job_id: str, provider: Any) -> dict[str, str]:
    return {name: seal(v, job_id=job_id, name=name, provider=provider) for name, v in values.items()}


def unseal_all(values: dict[str, str], *, job_id: str, provider: Any) -> dict[str, str]:
    return {name: unseal(v, job_id=job_id, name=name, provider=provider) for name, v in values.items()}
