"""Pausing the cyclic garbage collector around a large append."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

GC_PAUSE_MIN = 200

_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_resume = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection during a large append (EventStore.append_many of at least
    GC_PAUSE_MIN events). Appending makes no reference cycles (its tuples, strings and bytes are
    freed by reference counting), yet its allocations keep triggering collections that
    traverse every live object the application holds: with 50k events in memory that was a
    quarter of the encoding time. Collection is only postponed, to the end of the append, and
    resumes when the last concurrent pauser finishes, unless it was off before the first one
    started."""
    global _gc_pausers, _gc_resume
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_resume:
                gc.enable()
