"""The cancel watcher: notices when batches with requests in flight stop taking work.

A cancel notice (from this process, or another through LISTEN/NOTIFY) or a periodic look
at the states of the batches in hand finds them. A canceling batch's in-flight calls are
interrupted and end ``canceled`` (its pending requests are canceled by the lifecycle); an
ended one (expired by the sweeper) has its in-flight calls interrupted, their results
unwanted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..batches import Batches
from ..store.notify import Notice
from .inflight import InFlight

log = logging.getLogger("batchyard.engine")

REFRESH = 0.5  # seconds between looks at the states of batches in hand


class CancelWatcher:
    def __init__(
        self,
        batches: Batches,
        inflight: InFlight,
        on_closed: Callable[[set[str]], None],
        spawn: Callable[[Awaitable[None]], None],
    ) -> None:
        self.batches = batches
        self.inflight = inflight
        self.on_closed = on_closed  # batches that ended under requests in hand
        self.spawn = spawn
        self.canceling: set[str] = set()

    def is_canceling(self, batch_id: str) -> bool:
        return batch_id in self.canceling

    def canceled(self, batch_id: str) -> None:
        """A batch was canceled: interrupt its calls in flight, cancel its pending requests."""
        self.canceling.add(batch_id)
        for running in self.inflight.of_batches([batch_id]):
            running.stop("canceled")
        self.spawn(self.batches.close_canceled(batch_id))

    async def look(self) -> None:
        in_hand = self.inflight.batch_ids()
        states = await self.batches.batch_states(in_hand)
        for batch_id in in_hand:
            status = states.get(batch_id, "deleted")
            if status == "canceling" and batch_id not in self.canceling:
                self.canceled(batch_id)
        gone = {b for b in in_hand if states.get(b, "deleted") not in ("in_progress", "canceling")}
        if gone:
            self.on_closed(gone)
        self.canceling &= self.inflight.batch_ids()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            await self.look()

    async def listen(self, notices: asyncio.Queue[Notice], on_work: Callable[[], None]) -> None:
        """Act on notices: cancels at once; "there may be work" wakes the dispatcher."""
        while True:
            notice = await notices.get()
            if notice.kind == "canceled":
                self.canceled(notice.subject)
            elif notice.kind in ("created", "requeued"):
                on_work()
