"""The outcome writer: reports of finished requests, written in batched transactions.

Reports gathered within a few milliseconds go to the lifecycle in one ``settle`` (one
transaction); a failed write keeps them for the next try (their leases stay ours and the
heartbeat keeps renewing them meanwhile). PgQueuer's batched buffer, in small."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from ..batches import Batches, Settled
from ..outcomes import Report
from ..store.database import is_database_outage

log = logging.getLogger("batchyard.engine")

LINGER = 0.005  # seconds to gather more outcomes into one transaction
MAX_WRITE = 1024
RETRY_DELAY = 0.5


class OutcomeWriter:
    def __init__(
        self, batches: Batches, owner: str, on_settled: Callable[[Sequence[Report], Settled], None]
    ) -> None:
        self.batches = batches
        self.owner = owner
        self.on_settled = on_settled
        self._pending: list[Report] = []
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, report: Report) -> None:
        self._pending.append(report)
        self._ready.set()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            if len(self._pending) < MAX_WRITE:
                await asyncio.sleep(LINGER)
            await self.flush()

    async def flush(self, *, final: bool = False) -> None:
        self._ready.clear()
        while self._pending:
            chunk, self._pending = self._pending[:MAX_WRITE], self._pending[MAX_WRITE:]
            try:
                settled = await self.batches.settle(self.owner, chunk)
            except Exception as exc:
                self._pending[:0] = chunk
                if final:
                    log.exception("could not write outcomes at shutdown; their leases will expire")
                    return
                if is_database_outage(exc):
                    log.warning("database unavailable; outcomes kept for retry", extra={"outcomes": len(chunk)})
                else:
                    log.exception("writing outcomes failed; retrying")
                await asyncio.sleep(RETRY_DELAY)
                continue
            self.on_settled(chunk, settled)
