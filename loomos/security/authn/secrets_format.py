"""The bearer secrets LoomOS issues and how they are stored.

An API token is `loomos_pat_` + 43 url-safe characters (256 random bits), a session token
`loomos_sess_` + the same. The prefix says what a leaked string is (secret scanners match on
it) and lets the API route a bearer to the right lookup without trying each. The database
keeps SHA-256 of the whole string (HMAC-SHA256 under `tokens.pepper` when one is set), never
the string: a secret this random needs no slow hash, and the lookup stays one indexed read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_TOKEN_PREFIX = "loomos_pat_"
SESSION_PREFIX = "loomos_sess_"
CHALLENGE_PREFIX = "loomos_mfa_"
_RANDOM_BYTES = 32
# Longest bearer we look at: a JWT from a generous IdP, not megabytes of header.
MAX_BEARER_LENGTH = 8192


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(_RANDOM_BYTES)


def shown_prefix(token: str) -> str:
    """What lists show of a token: its kind and four characters (`loomos_pat_ab12`)."""
    kind = API_TOKEN_PREFIX if token.startswith(API_TOKEN_PREFIX) else SESSION_PREFIX
    return token[: len(kind) + 4]


class SecretHasher:
    """Hashes secrets for storage and lookup; keyed when a pepper is configured."""

    def __init__(self, pepper: str | None = None) -> None:
        self._key = pepper.encode() if pepper else None

    def __call__(self, secret: str) -> str:
        data = secret.encode()
        if self._key is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()
