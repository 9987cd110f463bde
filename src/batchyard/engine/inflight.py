"""The requests an engine holds, keyed by attempt: (batch, index, attempt number).

An attempt is held from its claim until its outcome is written, its lease is found lost,
or it is released at shutdown. Keying by attempt (not by request) matters when the same
engine claims a request again after its earlier lease lapsed (a database outage, say):
the stale attempt finishing late then touches only its own entry, never the new one's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from ..store.batches import Attempt, ClaimedRequest

StopReason = Literal["canceled", "lost", "shutdown"]


@dataclass(slots=True)
class Running:
    request: ClaimedRequest
    route: int | None  # the route it will run on (None: none; it will be refused)
    suspect: bool = False  # it lost its worker before, more than once
    task: asyncio.Task[None] | None = None
    stop_reason: StopReason | None = None  # why the engine interrupted it, if it did

    def stop(self, reason: StopReason) -> None:
        """Interrupt the attempt's backend call (closing an upstream request, freeing a slot)."""
        if self.task is not None and not self.task.done():
            self.stop_reason = reason
            self.task.cancel()


class InFlight:
    def __init__(self) -> None:
        self._held: dict[Attempt, Running] = {}
        self._by_route: dict[int | None, int] = {}
        self.suspects = 0

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[Running]:
        return iter(list(self._held.values()))

    def __contains__(self, attempt: object) -> bool:
        return attempt in self._held

    def add(self, request: ClaimedRequest, route: int | None, suspect: bool) -> Running:
        running = self._held[request.attempt] = Running(request, route, suspect)
        self._by_route[route] = self._by_route.get(route, 0) + 1
        self.suspects += suspect
        return running

    def drop(self, attempt: Attempt) -> Running | None:
        running = self._held.pop(attempt, None)
        if running is not None:
            self._by_route[running.route] -= 1
            self.suspects -= running.suspect
        return running

    def on_route(self, route: int) -> int:
        """Attempts held for a route (running, or about to)."""
        return self._by_route.get(route, 0)

    def attempts(self) -> list[Attempt]:
        return list(self._held)

    def batch_ids(self) -> set[str]:
        return {attempt[0] for attempt in self._held}

    def of_batches(self, batch_ids: Iterable[str]) -> list[Running]:
        wanted = set(batch_ids)
        return [r for a, r in self._held.items() if a[0] in wanted]

    def tasks(self) -> list[asyncio.Task[None]]:
        return [r.task for r in self._held.values() if r.task is not None and not r.task.done()]
