"""Authentication's audit trail: every success, failure, MFA challenge, lockout and token
creation or revocation becomes a LoomDB event, with who, how, from where and why; never a
password, code or token.

The API path only puts the event on a queue. A writer thread appends whatever has queued
every FLUSH_INTERVAL_S with one `append_many` (one transaction, one fsync per batch), so a
login does not wait on the disk, and a burst of failed logins costs one write per batch.
`close()` (app shutdown) flushes what is left.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from loomos.models.events import AuditContext, NewEvent, Priority, SecurityContext

log = structlog.get_logger()

FLUSH_INTERVAL_S = 0.05
MAX_BATCH = 500

AUTH_SUCCEEDED = "security.authentication.succeeded"
AUTH_FAILED = "security.authentication.failed"
MFA_CHALLENGED = "security.mfa.challenged"
ACCOUNT_LOCKED = "security.account.locked"
TOKEN_CREATED = "security.token.created"
TOKEN_REVOKED = "security.token.revoked"

_SAFE_STREAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,150}$")


@dataclass(frozen=True)
class RequestContext:
    """Where a request came from, as the audit trail and sessions record it."""

    source_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    def bounded(self) -> RequestContext:
        return RequestContext(
            (self.source_ip or None) and self.source_ip[:64],  # type: ignore[index]
            (self.user_agent or None) and self.user_agent[:500],  # type: ignore[index]
            (self.request_id or None) and self.request_id[:200],  # type: ignore[index]
        )


class EventSink(Protocol):
    def append_many(self, events: list[NewEvent]) -> Any: ...


def stream_for(subject: str | None) -> str:
    """One stream per user (`authn-user:alice`); names an attacker typed that are not plain
    identifiers share one stream instead of shaping ids."""
    if subject and _SAFE_STREAM.match(subject):
        return f"authn-user:{subject}"
    return "authn-unknown-user"


def auth_event(
    event_type: str,
    ctx: RequestContext,
    *,
    subject: str | None,
    method: str | None,
    reason: str | None = None,
    session_id: str | None = None,
    **data: Any,
) -> NewEvent:
    ctx = ctx.bounded()
    body = {"subject": (subject or "")[:200], "method": method, **data}
    if reason is not None:
        body["reason"] = reason
    high = event_type in (AUTH_FAILED, ACCOUNT_LOCKED)
    return NewEvent(
        event_type=event_type,
        stream_id=stream_for(subject),
        context=AuditContext(
            user_id=(subject or None) and subject[:200],
            session_id=session_id,
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            user_agent=ctx.user_agent,
        ),
        security=SecurityContext(authentication_method=method),
        priority=Priority.HIGH if high else Priority.NORMAL,
        tags=["security", "authn"],
        data={k: v for k, v in body.items() if v is not None},
    )


class AuditWriter:
    """A queue in front of LoomDB, drained by one daemon thread."""

    def __init__(self, sink: EventSink | None, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.sink = sink
        self.interval_s = interval_s
        self._queue: queue.SimpleQueue[NewEvent | None] = queue.SimpleQueue()
        self._flushed = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def record(self, event: NewEvent) -> None:
        if self.sink is None:
            return
        with self._flushed:
            self._pending += 1
        self._queue.put(event)
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="authn-audit", daemon=True)
                    self._thread.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded so far is written (tests, shutdown)."""
        with self._flushed:
            return self._flushed.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch = [] if first is None else [first]
            stopping = first is None
            # Let the batch gather for one interval, then take what came.
            if not stopping:
                time.sleep(self.interval_s)
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    continue
                batch.append(item)
            if batch:
                self._write(batch)

    def _write(self, batch: list[NewEvent]) -> None:
        assert self.sink is not None
        try:
            self.sink.append_many(batch)
        except Exception:  # the trail must not take the API down; say so loudly instead
            log.exception("authn audit events could not be written", count=len(batch))
        finally:
            with self._flushed:
                self._pending -= len(batch)
                self._flushed.notify_all()
