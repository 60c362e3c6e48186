"""EventBatch: buffer appends and write them together, flushing when `max_batch_size` events are
waiting or the oldest has waited `max_batch_wait_ms`. Events are validated when added, so one
bad event is refused on its own instead of failing the batch it would have joined. A repeated
event_id (still pending or recently written) is not sent twice: the caller gets the same
position back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from loomos.loomdb.validation import coerce_event
from loomos.models.events import NewEvent

if TYPE_CHECKING:
    from loomos.loomdb.store import EventStore


class EventBatch:
    """Batches appends for one asyncio loop; `add` returns a future of the event's position."""

    def __init__(
        self,
        store: EventStore,
        max_batch_size: int = 500,
        max_batch_wait_ms: float = 50,
        dedupe_window: int = 100_000,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_batch_wait_ms < 0:
            raise ValueError("max_batch_wait_ms must be >= 0")
        if dedupe_window < 0:
            raise ValueError("dedupe_window must be >= 0")
        self.store = store
        self.max_batch_size = max_batch_size
        self.max_batch_wait_ms = max_batch_wait_ms
        self.dedupe_window = dedupe_window
        self._pending: list[tuple[NewEvent, str | None]] = []
        self._futures: dict[uuid.UUID, asyncio.Future[int]] = {}
        self._recent: OrderedDict[uuid.UUID, int] = OrderedDict()
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.flushes = 0
        self.duplicates = 0

    async def __aenter__(self) -> EventBatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def add(self, event: NewEvent | dict[str, Any]) -> asyncio.Future[int]:
        """Queue one event; the returned future resolves to its position once it is written."""
        item = coerce_event(event)
        loop = asyncio.get_running_loop()
        if item.event_id in self._recent:
            self.duplicates += 1
            done: asyncio.Future[int] = loop.create_future()
            done.set_result(self._recent[item.event_id])
            return done
        if item.event_id in self._futures:
            self.duplicates += 1
            return self._futures[item.event_id]
        version = self.store.validate([item])[0]
        fut: asyncio.Future[int] = loop.create_future()
        self._futures[item.event_id] = fut
        self._pending.append((item, version))
        if len(self._pending) >= self.max_batch_size:
            await self.flush()
        elif self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._flush_later())
        return fut

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.max_batch_wait_ms / 1000)
        try:
            await self.flush()
        except Exception:  # noqa: S110
            # The events' futures carry the error to whoever waits on them; re-raising here
            # would only end as "Task exception was never retrieved".
            pass

    async def flush(self) -> list[int]:
        """Write whatever is pending now. Also stops the wait timer: the next event starts a
        fresh max_batch_wait_ms (a timer left over from an earlier event would flush it early)."""
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task() and not timer.done():
            timer.cancel()
        async with self._lock:
            if not self._pending:
                return []
            batch, self._pending = self._pending, []
            futures = [self._futures.pop(e.event_id) for e, _ in batch]
            try:
                positions = await asyncio.to_thread(
                    self.store.group_commit.append, [e for e, _ in batch], [v for _, v in batch], None
                )
            except BaseException as exc:
                for f in futures:
                    if not f.done():
                        f.set_exception(exc)
                        f.exception()  # consumed here so an un-awaited future does not warn
                raise
            self.flushes += 1
            for (e, _), f, p in zip(batch, futures, positions, strict=True):
                if not f.done():
                    f.set_result(p)
                self._recent[e.event_id] = p
            while len(self._recent) > self.dedupe_window:
                self._recent.popitem(last=False)
            return positions

    async def close(self) -> None:
        """Flush what is pending (flush also stops the timer)."""
        await self.flush()
