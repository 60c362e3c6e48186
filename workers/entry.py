"""Run an async service until SIGINT/SIGTERM, then let it shut down cleanly."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from loomos.settings import load_settings
from loomos.structured_logging import configure_logging


def run_until_signalled(service: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    configure_logging(load_settings().logs.format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service(stop)

    asyncio.run(main())
