"""Local passwords: argon2id (argon2-cffi), with bounds checked before any hashing.

A username or password over the bounds is refused as bad input (no hashing of megabytes).
Unknown usernames are checked against a fixed dummy hash, so an answer takes as long whether
or not the account exists.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MAX_USERNAME_LENGTH = 128
MAX_PASSWORD_LENGTH = 1024  # characters; a passphrase, not a payload
MIN_PASSWORD_LENGTH = 8
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$"


class PasswordTooWeak(ValueError):
    pass


class Passwords:
    """Hash and check passwords. Tests pass a cheaper `hasher`; production keeps argon2-cffi's
    defaults (RFC 9106's low-memory profile: 64 MiB, 3 passes)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy = self.hasher.hash("loomos-no-such-user")

    def hash(self, password: str) -> str:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise PasswordTooWeak(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise PasswordTooWeak(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
        return self.hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True if `password` matches; None (no such user, no local password) costs the same."""
        try:
            return self.hasher.verify(stored_hash or self._dummy, password) and stored_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self.hasher.check_needs_rehash(stored_hash)
