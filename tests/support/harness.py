"""An engine in this process over a real store (SQLite or PostgreSQL), with a backend the
test controls call by call and a host clock the test can move.

The backend's calls block until the test lets each one go, so a test can line up exactly
the interleaving it wants (a lease lapsing while a call is in flight, a cancel landing on
calls already sent) and look at the engine's state in between."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchyard.backends.base import Backend, BackendError, GenerateRequest
from batchyard.backends.router import Router
from batchyard.backends.simulator import SimulatorBackend
from batchyard.batches import Batches
from batchyard.config import EngineSettings, Settings
from batchyard.engine.dispatcher import Engine
from batchyard.metrics import Metrics
from batchyard.protocol.timestamps import now_us
from batchyard.routes import Route
from batchyard.store import migrate
from batchyard.store.batches import BatchRecord, BatchStore
from batchyard.store.database import Database, parse_database_url
from batchyard.store.notify import Notifier


@dataclass
class Call:
    request: GenerateRequest
    gate: asyncio.Future[Any]
    cancelled: bool = False

    @property
    def text(self) -> str:
        content = self.request.request.messages[-1].content
        return content if isinstance(content, str) else ""


class GatedBackend(Backend):
    """Answers like the simulator, but only when the test releases each call."""

    name = "gated"

    def __init__(self, route: Route) -> None:
        super().__init__(route)
        self._sim = SimulatorBackend(Route(id=route.id, backend="simulator"))
        self.calls: list[Call] = []
        self._changed = asyncio.Event()

    async def create(self, req: GenerateRequest) -> dict[str, Any]:
        call = Call(req, asyncio.get_running_loop().create_future())
        self.calls.append(call)
        self._changed.set()
        try:
            outcome = await call.gate
        except asyncio.CancelledError:
            call.cancelled = True
            self._changed.set()
            raise
        if isinstance(outcome, BackendError):
            raise outcome
        message = self._sim.generate(req)
        if isinstance(outcome, str):
            message["content"] = [{"type": "text", "text": outcome, "citations": None}]
        return message

    async def wait_calls(self, count: int, within: float = 10.0) -> list[Call]:
        deadline = time.monotonic() + within
        while len(self.calls) < count:
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"expected {count} backend calls, saw {len(self.calls)}")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass
        return self.calls[:count]

    def release(self, call: Call, outcome: Any = None) -> None:
        if not call.gate.done():
            call.gate.set_result(outcome)


class FakeClock:
    """The host's clock in microseconds, moved by the test."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return now_us() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += int(seconds * 1e6)


@dataclass
class Harness:
    url: str
    engine_settings: dict[str, Any] = field(default_factory=dict)
    max_concurrency: int | None = None
    clock: FakeClock = field(default_factory=FakeClock)

    async def open(self) -> Harness:
        self.db = Database(parse_database_url(self.url))
        await migrate.upgrade(self.db)
        settings = Settings()
        # Long leases and sweeps by default: the test drives heartbeats and sweeps itself.
        defaults = {"lease": 60.0, "sweep_interval": 3600.0, "poll_interval": 0.05, "shutdown_grace": 0.0}
        settings.engine = EngineSettings(**{**defaults, **self.engine_settings})
        route = Route(id="*", backend="simulator", max_concurrency=self.max_concurrency, max_attempts=3)
        settings.routes = [route]
        self.settings = settings
        self.notifier = Notifier()
        self.batches = Batches(BatchStore(self.db, clock=self.clock), settings, self.notifier)
        self.router = Router(settings.routes)
        self.backend = GatedBackend(route)
        self.router.backends[0] = self.backend
        self.metrics = Metrics()
        self.engine = Engine(self.batches, self.router, settings.engine, self.notifier, self.metrics, owner="engine-a")
        return self

    async def start(self) -> None:
        await self.engine.start()

    async def close(self) -> None:
        await self.engine.stop() if self.engine._loops else None
        await self.db.close()

    async def create(self, count: int, text: Callable[[int], str] = lambda i: f"line {i}") -> BatchRecord:
        lines = [
            {
                "custom_id": f"r{i}",
                "params": {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": text(i)}]},
            }
            for i in range(count)
        ]
        return await self.batches.create("default", "2023-06-01", io.BytesIO(orjson.dumps({"requests": lines})))

    def stale(self, source: str | None = None) -> float:
        values = self.metrics.stale_outcomes.values
        return sum(v for k, v in values.items() if source is None or dict(k).get("source") == source)


async def until(condition: Callable[[], Any], within: float = 10.0, what: str = "the condition") -> None:
    """Poll an (async or plain) condition until it holds."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
