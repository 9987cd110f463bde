"""Requests-per-minute limits per API key: a token bucket per key that holds a minute's
allowance and refills continuously.

On SQLite (one server process) the buckets live in memory. On PostgreSQL, where several
API processes may serve the same keys, each key has one bucket in the database and every
process draws from it (`SharedRequestLimiter`), so N processes allow the rate once, not N
times."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from dataclasses import dataclass, field

from ..store.ratelimits import RateStore
from .surfaces import Surface

log = logging.getLogger("batchyard.ratelimit")


@dataclass(slots=True)
class Bucket:
    capacity: float
    tokens: float
    stamp: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # unix seconds when the bucket is full again
    retry_after: float  # seconds until one request is allowed (0 when allowed)

    def headers(self, surface: Surface = Surface.ANTHROPIC) -> dict[str, str]:
        if surface is Surface.OPENAI:  # OpenAI's names, and its reset as a duration ("6m0s")
            headers = {
                "x-ratelimit-limit-requests": str(self.limit),
                "x-ratelimit-remaining-requests": str(self.remaining),
                "x-ratelimit-reset-requests": _duration(self.reset_at - int(time.time())),
            }
        else:
            headers = {
                "anthropic-ratelimit-requests-limit": str(self.limit),
                "anthropic-ratelimit-requests-remaining": str(self.remaining),
                "anthropic-ratelimit-requests-reset": _rfc3339_seconds(self.reset_at),
            }
        if not self.allowed:
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after)))
        return headers


class RequestLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, Bucket] = {}

    def take(self, key_id: str, per_minute: int, now: float | None = None) -> Decision | None:
        """Spend one request of the key's allowance; None when the key has no limit."""
        if per_minute <= 0:
            return None
        now = time.monotonic() if now is None else now
        rate = per_minute / 60.0
        bucket = self._buckets.get(key_id)
        if bucket is None or bucket.capacity != per_minute:
            bucket = self._buckets[key_id] = Bucket(per_minute, per_minute, now)
        bucket.tokens = min(bucket.capacity, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        allowed = bucket.tokens >= 1
        if allowed:
            bucket.tokens -= 1
        refill_seconds = (bucket.capacity - bucket.tokens) / rate
        return Decision(
            allowed=allowed,
            limit=per_minute,
            remaining=int(bucket.tokens),
            reset_at=int(time.time()) + math.ceil(refill_seconds),
            retry_after=0.0 if allowed else (1 - bucket.tokens) / rate,
        )


@dataclass(slots=True)
class _Stock:
    """What one process holds of a key's shared bucket."""

    capacity: int
    tokens: int = 0  # granted to this process, not yet spent
    expires: float = 0.0  # unspent tokens are dropped then (monotonic seconds)
    shared_left: float = 0.0  # the shared bucket right after the last grab
    denied_until: float = 0.0  # the shared bucket is empty until then
    taken: int = 0  # requests served since the last grab
    grabbed_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SharedRequestLimiter:
    """One bucket per key for every API process on a PostgreSQL database.

    A process takes tokens out of the shared bucket a few at a time (about a quarter of a
    second of its own recent traffic, one when it is quiet, never more than a second's
    allowance) and spends them locally; tokens not spent within a second are dropped. So
    the processes together never allow more than the key's rate, and a busy server asks
    the database a few dozen times a second, not once per request. While the bucket is
    empty a process refuses locally until the next token is due. If the database cannot
    be asked, the process falls back to its own in-memory bucket."""

    STOCK_SECONDS = 1.0
    AHEAD_SECONDS = 0.25

    def __init__(self, store: RateStore, fallback: RequestLimiter) -> None:
        self.store = store
        self.fallback = fallback
        self._stocks: dict[str, _Stock] = {}
        self._warned_at = 0.0

    async def take(self, key_id: str, per_minute: int) -> Decision | None:
        if per_minute <= 0:
            return None
        stock = self._stocks.get(key_id)
        if stock is None or stock.capacity != per_minute:
            stock = self._stocks[key_id] = _Stock(per_minute)
        decision = self._spend(stock, time.monotonic())
        if decision is not None:
            return decision
        async with stock.lock:
            now = time.monotonic()
            decision = self._spend(stock, now)  # another request may have grabbed meanwhile
            if decision is not None:
                return decision
            recent_rate = stock.taken / max(now - stock.grabbed_at, 1e-3)
            want = max(1, min(math.ceil(recent_rate * self.AHEAD_SECONDS), math.ceil(per_minute / 60)))
            try:
                granted, left = await self.store.grab(key_id, per_minute, want)
            except Exception as exc:  # the limiter must not turn a database hiccup into 500s
                if now - self._warned_at > 30:
                    self._warned_at = now
                    log.warning("shared rate limits unavailable; limiting per process", extra={"error": type(exc).__name__})
                return self.fallback.take(key_id, per_minute)
            now = time.monotonic()
            stock.tokens, stock.shared_left = granted, left
            stock.expires = now + self.STOCK_SECONDS
            stock.taken, stock.grabbed_at = 0, now
            if granted == 0:
                stock.denied_until = now + (1 - left) / (per_minute / 60.0)
            decision = self._spend(stock, now)
            assert decision is not None
            return decision

    @staticmethod
    def _spend(stock: _Stock, now: float) -> Decision | None:
        rate = stock.capacity / 60.0
        if stock.tokens >= 1 and now < stock.expires:
            stock.tokens -= 1
            stock.taken += 1
            remaining = stock.shared_left + stock.tokens
            return Decision(
                allowed=True,
                limit=stock.capacity,
                remaining=int(remaining),
                reset_at=int(time.time()) + math.ceil((stock.capacity - remaining) / rate),
                retry_after=0.0,
            )
        if now < stock.denied_until:
            return Decision(
                allowed=False,
                limit=stock.capacity,
                remaining=0,
                reset_at=int(time.time()) + math.ceil(stock.capacity / rate),
                retry_after=stock.denied_until - now,
            )
        return None


@functools.lru_cache(maxsize=64)
def _rfc3339_seconds(when: int) -> str:
    """``2026-02-25T20:02:37Z``, as the real service writes reset times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _duration(seconds: int) -> str:
    """``45s``, ``6m0s``, ``1h2m3s``: how OpenAI writes its reset times."""
    seconds = max(0, seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
