"""Requests-per-minute limits per API key: a token bucket per key that holds a minute's
allowance and refills continuously. Each API process keeps its own buckets."""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass


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

    def headers(self) -> dict[str, str]:
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


@functools.lru_cache(maxsize=64)
def _rfc3339_seconds(when: int) -> str:
    """``2026-02-25T20:02:37Z``, as the real service writes reset times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
