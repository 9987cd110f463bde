"""Per-route concurrency: a bounded number of calls in flight, interactive calls first, and
batch calls taken round-robin across batches so that a small batch is not queued behind
every line of a large one.

The bound adapts the way TCP congestion control does: it halves when the backend says
it is overloaded (429/529) and grows by one after a run of successes, never above the
configured ``max_concurrency`` nor below one.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from ..backends.base import BackendError

if TYPE_CHECKING:
    from ..backends.base import Backend, GenerateRequest
    from ..metrics import Metrics

OVERLOADED_STATUSES = (429, 529)


class RouteLimiter:
    def __init__(self, limit: int | None, *, adaptive: bool = True) -> None:
        self.max_limit = limit
        self.limit = limit
        self.adaptive = adaptive and limit is not None
        self.active = 0
        self._interactive: deque[asyncio.Future[None]] = deque()
        # One queue per batch; the first key is the next to be served.
        self._groups: OrderedDict[Hashable, deque[asyncio.Future[None]]] = OrderedDict()
        self._successes = 0

    @property
    def waiting(self) -> int:
        return len(self._interactive) + sum(len(q) for q in self._groups.values())

    def _has_room(self) -> bool:
        return self.limit is None or self.active < self.limit

    def _next_waiter(self) -> asyncio.Future[None] | None:
        if self._interactive:
            return self._interactive.popleft()
        if not self._groups:
            return None
        group, queue = next(iter(self._groups.items()))
        waiter = queue.popleft()
        if queue:
            self._groups.move_to_end(group)  # this batch had its turn
        else:
            del self._groups[group]
        return waiter

    def _wake_next(self) -> None:
        while self._has_room():
            waiter = self._next_waiter()
            if waiter is None:
                return
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)

    def slot(self, *, interactive: bool, group: Hashable = None) -> Slot:
        """``async with limiter.slot(...)``: a call in flight for the block."""
        return Slot(self, interactive, group)

    async def _wait(self, interactive: bool, group: Hashable) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if interactive:
            self._interactive.append(waiter)
        else:
            self._groups.setdefault(group, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.active -= 1  # granted just as we were cancelled: give it back
                self._wake_next()
            raise

    def _release(self) -> None:
        self.active -= 1
        self._wake_next()

    def record(self, *, overloaded: bool) -> None:
        """Feed back the outcome of a call (adaptive limit)."""
        if not self.adaptive or self.max_limit is None or self.limit is None:
            return
        if overloaded:
            self.limit = max(1, self.limit // 2)
            self._successes = 0
            return
        self._successes += 1
        if self.limit < self.max_limit and self._successes >= self.limit:
            self.limit += 1
            self._successes = 0
            self._wake_next()


class Slot:
    """One call's place on its route. A class, not a generator-based context manager: with
    room free, entering and leaving cost two plain calls (this is on every call's path)."""

    __slots__ = ("_limiter", "_interactive", "_group")

    def __init__(self, limiter: RouteLimiter, interactive: bool, group: Hashable) -> None:
        self._limiter, self._interactive, self._group = limiter, interactive, group

    async def __aenter__(self) -> None:
        limiter = self._limiter
        if limiter._has_room() and not limiter._interactive and (self._interactive or not limiter._groups):
            limiter.active += 1
        else:
            await limiter._wait(self._interactive, self._group)

    async def __aexit__(self, *exc: object) -> None:
        self._limiter._release()


def record_call(
    limiter: RouteLimiter, metrics: Metrics, *, route: str, kind: str, error: BackendError | None = None
) -> None:
    """Feed one backend call's outcome to its route's limiter and to the metrics."""
    limiter.record(overloaded=error is not None and error.status in OVERLOADED_STATUSES)
    metrics.backend_calls.inc(route=route, kind=kind, outcome="ok" if error is None else error.error_type)


async def measured_create(
    backend: Backend, request: GenerateRequest, limiter: RouteLimiter, metrics: Metrics, *, kind: str
) -> dict[str, Any]:
    """One non-streaming backend call, made inside the caller's slot: its latency and
    outcome go to the metrics and its outcome to the route's limiter."""
    route = backend.route.id
    started = time.perf_counter()
    try:
        message = await backend.create(request)
    except BackendError as exc:
        record_call(limiter, metrics, route=route, kind=kind, error=exc)
        raise
    finally:
        metrics.backend_latency.observe(time.perf_counter() - started, route=route)
    record_call(limiter, metrics, route=route, kind=kind)
    return message
