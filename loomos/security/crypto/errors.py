"""What can go wrong with encrypted data, split by what the caller should do about it.

- KeyError-like problems (KeyUnavailable): the key is missing or unreadable. Nothing about the
  data is known to be wrong; an operator must fix the keyring, so callers must not treat the
  data as corrupt (a training job must not silently restart from scratch).
- IntegrityError: the data is not what was sealed (tampered, truncated, reordered, another
  file's header, the wrong file id). Callers may skip it like a corrupt file.
- FormatError: not a LoomOS encrypted file at all (or a newer format version).

This module imports nothing, so a training process can catch these without loading
cryptography.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base of LoomOS's encryption errors."""


class KeyUnavailable(CryptoError):
    """The key needed is not there: no keyring file, an unreadable or unsafe one, a key id it
    does not hold, a KMS that will not unwrap it. Messages name the key id and the file."""


class KeyFileError(KeyUnavailable):
    """The keyring file is missing, unreadable, malformed, or readable by others."""


class UnknownKeyId(KeyUnavailable):
    def __init__(self, key_id: str, where: str, known: list[str], context: str = "") -> None:
        self.key_id = key_id
        known_text = ", ".join(known) if known else "no keys"
        context = f" (needed by {context})" if context else ""
        super().__init__(f"key id {key_id!r}{context} is not in {where}; it holds: {known_text}")


class IntegrityError(CryptoError):
    """The data does not authenticate: tampered, truncated, reordered, or not the file asked for."""


class FormatError(IntegrityError):
    """Not a LoomOS encrypted stream, or a format version this code does not read."""
