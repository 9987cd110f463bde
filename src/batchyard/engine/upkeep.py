"""Periodic and long-running engine work: a database outage pauses it, never kills it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..store.database import is_database_outage

log = logging.getLogger("batchyard.engine")

DB_RETRY_DELAY = 0.5


async def guarded(name: str, loop: Callable[[], Awaitable[None]], stopping: Callable[[], bool]) -> None:
    """Run ``loop`` until it returns; after a failure wait a moment and run it again."""
    while not stopping():
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_database_outage(exc):
                log.warning("database unavailable; retrying", extra={"loop": name, "error": type(exc).__name__})
            else:
                log.exception("engine loop failed; retrying", extra={"loop": name})
            await asyncio.sleep(DB_RETRY_DELAY)


def poll(work: Callable[[], Awaitable[None]], every: float) -> Callable[[], Awaitable[None]]:
    """A loop that does ``work`` every ``every`` seconds (saq's ``poll``)."""

    async def loop() -> None:
        while True:
            await work()
            await asyncio.sleep(every)

    return loop
