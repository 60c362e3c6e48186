"""Who a credential belongs to once checked (a Principal), and the in-process cache of those
checks that keeps an authenticated request within a millisecond of an anonymous one."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Principal:
    user_id: str
    subject: str
    display_name: str | None
    default_team: str
    auth_method: str  # an AuthMethod value
    session_id: str | None = None
    token_id: str | None = None
    mfa_verified_at: datetime | None = None
    permissions: list[str] | None = None  # an API token's scope
    roles: dict[str, list[str]] = field(default_factory=dict)
    # A platform_admin whose MFA is missing or older than the grace period: the role is left
    # out of `roles` until MFA is passed again.
    admin_needs_mfa: bool = False
    expires_at: datetime | None = None


def cache_key(bearer: str) -> str:
    return hashlib.sha256(bearer.encode()).hexdigest()


class CredentialCache:
    """bearer hash -> Principal for `ttl_s` (never past the credential's own expiry). Revoking
    in this process drops entries at once; other processes see it within `ttl_s`."""

    MAX_ENTRIES = 50_000

    def __init__(self, ttl_s: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.monotonic = monotonic
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        principal, until = hit
        if self.monotonic() >= until:
            self._entries.pop(key, None)
            return None
        return principal

    def put(self, key: str, principal: Principal, seconds_left: float | None) -> None:
        if self.ttl_s <= 0:
            return
        ttl = self.ttl_s if seconds_left is None else min(self.ttl_s, seconds_left)
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (principal, self.monotonic() + ttl)

    def drop(
        self, *, session_id: str | None = None, token_id: str | None = None, user_id: str | None = None
    ) -> None:
        with self._lock:
            for key, (p, _) in list(self._entries.items()):
                if (
                    (session_id and p.session_id == session_id)
                    or (token_id and p.token_id == token_id)
                    or (user_id and p.user_id == user_id)
                ):
                    del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
