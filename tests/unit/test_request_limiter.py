"""The shared requests-per-minute limiter's own logic: how it draws on the shared bucket.
The bucket's SQL runs against a real PostgreSQL in tests/integration/test_security.py;
here a bucket in memory stands in so that the drawing pattern can be counted."""

from __future__ import annotations

import asyncio

from batchyard.api.ratelimit import RequestLimiter, SharedRequestLimiter


class Bucket:
    """A shared bucket with no refill (the test is far shorter than a token's interval)."""

    def __init__(self, capacity: int) -> None:
        self.left = float(capacity)
        self.grabs: list[int] = []
        self.broken = False

    async def grab(self, key_id: str, capacity: int, want: int) -> tuple[int, float]:
        if self.broken:
            raise ConnectionError("database gone")
        await asyncio.sleep(0.001)  # a round trip, during which other requests pile up
        self.grabs.append(want)
        granted = min(want, int(self.left))
        self.left -= granted
        return granted, self.left


def test_a_burst_draws_in_chunks_and_never_past_the_allowance() -> None:
    async def run() -> tuple[list[bool], Bucket]:
        bucket = Bucket(600)
        limiter = SharedRequestLimiter(bucket, RequestLimiter())  # type: ignore[arg-type]
        decisions = await asyncio.gather(*(limiter.take("key_1", 600) for _ in range(1000)))
        return [d.allowed for d in decisions if d is not None], bucket

    allowed, bucket = asyncio.run(run())
    assert len(allowed) == 1000
    assert sum(allowed) <= 600  # never more than the minute's allowance
    assert sum(allowed) >= 500  # and not much wasted while the burst lasts
    assert len(bucket.grabs) < 100  # chunks of up to a second's allowance (10), not one per request
    assert max(bucket.grabs) == 10


def test_an_empty_bucket_refuses_locally_without_asking_again() -> None:
    async def run() -> tuple[list[bool], Bucket]:
        bucket = Bucket(3)
        limiter = SharedRequestLimiter(bucket, RequestLimiter())  # type: ignore[arg-type]
        results = []
        for _ in range(20):
            decision = await limiter.take("key_1", 3)
            assert decision is not None
            results.append(decision.allowed)
        return results, bucket

    results, bucket = asyncio.run(run())
    assert results == [True] * 3 + [False] * 17
    assert len(bucket.grabs) == 4  # three single grabs, one that came back empty, then local refusals


def test_a_database_hiccup_falls_back_to_the_process_bucket() -> None:
    async def run() -> list[bool]:
        bucket = Bucket(100)
        bucket.broken = True
        limiter = SharedRequestLimiter(bucket, RequestLimiter())  # type: ignore[arg-type]
        out = []
        for _ in range(4):
            decision = await limiter.take("key_1", 3)
            assert decision is not None and decision.limit == 3
            out.append(decision.allowed)
        return out

    assert asyncio.run(run()) == [True, True, True, False]
