"""Password guessing: a per-address rate limit (in this process) and a per-username lockout
(in the database, so every API process sees it).

`max_failures` failed logins within `window_minutes` lock the username for `lockout_minutes`;
the lock is released on time (the next attempt after it finds the row expired and starts
afresh), and a good login clears the count. Usernames are counted whether or not they exist,
so a lockout does not reveal which names are real.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from loomos.security.authn import tables as t
from loomos.security.authn.settings import LockoutSettings

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Failure:
    failures: int
    locked_until: datetime | None  # set when this failure locked the account


class Lockouts:
    def __init__(self, engine: Engine, settings: LockoutSettings, clock: Clock) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock

    @staticmethod
    def _key(username: str) -> str:
        return username.lower()[:128]

    def locked_until(self, username: str) -> datetime | None:
        with self.engine.connect() as conn:
            until = conn.execute(
                select(t.login_failures.c.locked_until).where(
                    t.login_failures.c.username == self._key(username)
                )
            ).scalar()
        until = t.as_utc(until)
        return until if until is not None and until > self.clock() else None

    def record_failure(self, username: str) -> Failure:
        key, now = self._key(username), self.clock()
        window = timedelta(minutes=self.settings.window_minutes)
        for _ in range(3):  # a concurrent first failure may insert the row under us
            with self.engine.begin() as conn:
                row = (
                    conn.execute(
                        select(t.login_failures).where(t.login_failures.c.username == key).with_for_update()
                    )
                    .mappings()
                    .first()
                )
                if row is None:
                    try:
                        conn.execute(
                            t.login_failures.insert().values(username=key, failures=1, window_started_at=now)
                        )
                    except IntegrityError:
                        continue
                    failures, locked = 1, None
                else:
                    started = t.as_utc(row["window_started_at"])
                    old_lock = t.as_utc(row["locked_until"])
                    expired = now - started > window or (old_lock is not None and old_lock <= now)  # type: ignore[operator]
                    failures = 1 if expired else row["failures"] + 1
                    locked = None
                    values: dict[str, object] = {"failures": failures, "locked_until": None}
                    if expired:
                        values["window_started_at"] = now
                    if failures >= self.settings.max_failures:
                        locked = now + timedelta(minutes=self.settings.lockout_minutes)
                        values["locked_until"] = locked
                    conn.execute(
                        update(t.login_failures).where(t.login_failures.c.username == key).values(**values)
                    )
                if failures >= self.settings.max_failures and locked is None:
                    locked = now + timedelta(minutes=self.settings.lockout_minutes)
                    conn.execute(
                        update(t.login_failures)
                        .where(t.login_failures.c.username == key)
                        .values(locked_until=locked)
                    )
            return Failure(failures, locked)
        raise RuntimeError("could not record the failed login")

    def clear(self, username: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(t.login_failures).where(t.login_failures.c.username == self._key(username)))


class RateLimiter:
    """At most `per_minute` attempts per key (a source address) in any 60 s, in this process."""

    def __init__(self, per_minute: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.monotonic = monotonic
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float | None:
        """None if an attempt is allowed now (and counts it), else seconds until one is."""
        now = self.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return 60 - (now - hits[0])
            hits.append(now)
            if len(self._hits) > 10_000:  # forget idle addresses rather than grow without bound
                for idle in [k for k, v in self._hits.items() if not v or now - v[-1] >= 60]:
                    del self._hits[idle]
            return None
