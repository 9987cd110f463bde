"""The heartbeat: renews the leases of every attempt an engine holds, and reports the
ones whose lease is gone (another engine has the request now, or it was closed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from ..batches import Batches
from ..store.batches import Attempt
from .inflight import InFlight


class Heartbeat:
    def __init__(
        self,
        batches: Batches,
        owner: str,
        inflight: InFlight,
        every: float,
        on_lost: Callable[[Sequence[Attempt], str], None],
    ) -> None:
        self.batches = batches
        self.owner = owner
        self.inflight = inflight
        self.every = every
        self.on_lost = on_lost

    async def beat(self) -> None:
        held = self.inflight.attempts()
        if not held:
            return
        lost = await self.batches.renew(self.owner, held)
        if lost:
            self.on_lost(lost, "renew")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self.beat()
