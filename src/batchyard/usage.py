"""Usage of interactive calls: each answer's tokens are gathered in memory and added to the
minute buckets (``store.usage``) every second, in one transaction per flush. (Batch lines
do not pass here: their tokens are written with their results, in one transaction.) A
process killed between two flushes loses at most that second of interactive usage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .metrics import Metrics, count_tokens
from .protocol.timestamps import now_us
from .protocol.usage import Tokens
from .store.usage import UsageKey, UsageStore, merge, minute_of

log = logging.getLogger("batchyard.usage")

FLUSH_EVERY = 1.0  # seconds


@dataclass(frozen=True, slots=True)
class Account:
    """Who made a call: its workspace and API key ("" in open mode)."""

    workspace_id: str
    key_id: str


class UsageRecorder:
    def __init__(
        self, store: UsageStore, metrics: Metrics | None = None, label_of: Callable[[str], str] = lambda m: m
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.label_of = label_of  # a model's name in metric labels
        self._pending: list[tuple[UsageKey, Tokens]] = []

    def record(self, account: Account, model: str, tokens: Tokens, service_tier: str = "standard") -> None:
        key = UsageKey(minute_of(now_us()), account.workspace_id, account.key_id, model, service_tier)
        self._pending.append((key, tokens))
        if self.metrics is not None:
            count_tokens(self.metrics, account.workspace_id, self.label_of(model), service_tier, tokens)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            await self.store.add(merge(pending))
        except BaseException:
            self._pending[:0] = pending  # kept for the next flush
            raise


async def flush_forever(recorder: UsageRecorder, every: float = FLUSH_EVERY) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await recorder.flush()
        except Exception:
            log.warning("could not record interactive usage; it is kept for the next try")
