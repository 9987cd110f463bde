"""Per-route concurrency: bounded, interactive first, adaptive."""

from __future__ import annotations

import asyncio

from batchyard.engine.limits import RouteLimiter


def test_bound_is_respected_and_interactive_goes_first() -> None:
    async def scenario() -> list[str]:
        limiter = RouteLimiter(2, adaptive=False)
        order: list[str] = []
        peak = 0
        gate = asyncio.Event()

        async def worker(name: str, interactive: bool) -> None:
            nonlocal peak
            async with limiter.slot(interactive=interactive):
                peak = max(peak, limiter.active)
                order.append(name)
                await gate.wait()

        holders = [asyncio.create_task(worker(f"b{i}", False)) for i in range(2)]
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(worker(f"b{i}", False)) for i in range(2, 5)]
        await asyncio.sleep(0)
        urgent = asyncio.create_task(worker("i0", True))
        await asyncio.sleep(0)
        assert limiter.waiting == 4
        gate.set()
        await asyncio.gather(*holders, *waiting, urgent)
        assert peak == 2
        return order

    order = asyncio.run(scenario())
    assert order[:2] == ["b0", "b1"]
    assert order[2] == "i0"


def test_limit_halves_on_overload_and_grows_back() -> None:
    limiter = RouteLimiter(8)
    limiter.record(overloaded=True)
    assert limiter.limit == 4
    limiter.record(overloaded=True)
    limiter.record(overloaded=True)
    limiter.record(overloaded=True)
    assert limiter.limit == 1
    for _ in range(200):
        limiter.record(overloaded=False)
    assert limiter.limit == 8


def test_unbounded_limiter_never_waits() -> None:
    async def scenario() -> int:
        limiter = RouteLimiter(None)
        async with limiter.slot(interactive=False):
            async with limiter.slot(interactive=False):
                return limiter.active

    assert asyncio.run(scenario()) == 2


def test_batches_take_turns_in_the_batch_lane() -> None:
    async def scenario() -> list[str]:
        limiter = RouteLimiter(1, adaptive=False)
        order: list[str] = []
        gate = asyncio.Event()

        async def worker(group: str, n: int) -> None:
            async with limiter.slot(interactive=False, group=group):
                order.append(f"{group}{n}")
                await gate.wait()

        holder = asyncio.create_task(worker("big", 0))
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(worker("big", i)) for i in range(1, 6)]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(worker("small", i)) for i in range(2)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(holder, *tasks)
        return order

    order = asyncio.run(scenario())
    assert order[:5] == ["big0", "big1", "small0", "big2", "small1"]
