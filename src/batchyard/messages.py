"""Interactive Messages: validate, route to the backend, answer (JSON, a stream, or a count).

Interactive calls share each route's concurrency limit with the engine's batch work and
go ahead of it in the queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from .backends.base import Backend, BackendError, GenerateRequest
from .backends.router import Router
from .engine.limits import RouteLimiter, measured_create, record_call
from .metrics import Metrics
from .protocol.messages import MessageCreateRequest, ValidatedRequest, validate_message_request
from .protocol.sse import PING
from .protocol.usage import tokens_of
from .usage import Account, UsageRecorder

STREAM_BUFFER = 256  # events read ahead of a slow client at most


class Messages:
    def __init__(
        self,
        router: Router,
        limiters: dict[int, RouteLimiter],
        metrics: Metrics,
        *,
        ping_interval: float = 10.0,
        usage: UsageRecorder | None = None,
    ) -> None:
        self.router = router
        self.limiters = limiters
        self.metrics = metrics
        self.ping_interval = ping_interval
        self.usage = usage

    def _route(self, validated: ValidatedRequest) -> tuple[Backend, RouteLimiter]:
        route = self.router.route_for(validated.model.model)
        assert route is not None  # validation checked the model
        return self.router.backends[route.index], self.limiters[route.index]

    def validate(self, body: Any, version: str, *, count_tokens: bool = False) -> ValidatedRequest:
        return validate_message_request(body, version, self.router, count_tokens=count_tokens)

    async def create(self, validated: ValidatedRequest, account: Account | None = None) -> dict[str, Any]:
        backend, limiter = self._route(validated)
        assert isinstance(validated.model, MessageCreateRequest)
        request = GenerateRequest(validated.model, validated.body, validated.version)
        async with limiter.slot(interactive=True):
            message = await measured_create(backend, request, limiter, self.metrics, kind="interactive")
        if self.usage is not None and account is not None:
            self.usage.record(account, validated.model.model, tokens_of(message))
        return message

    async def stream(self, validated: ValidatedRequest, account: Account | None = None) -> MessageStream:
        """The stream's events. The first event is produced before this returns, so a
        failure to start is raised here (and becomes an HTTP error); later failures are
        raised by the iterator (and become an ``error`` event). The caller must
        ``aclose()`` it whatever happens (a client may leave before reading anything)."""
        backend, limiter = self._route(validated)
        assert isinstance(validated.model, MessageCreateRequest)
        slot = limiter.slot(interactive=True)
        await slot.__aenter__()
        route = backend.route.id
        try:
            events = backend.stream(GenerateRequest(validated.model, validated.body, validated.version))
            first = await anext(events)
        except BaseException as exc:
            if isinstance(exc, BackendError):
                record_call(limiter, self.metrics, route=route, kind="stream", error=exc)
            await slot.__aexit__(None, None, None)
            raise
        stream = MessageStream(first, events, limiter, slot, route, self.metrics, self.ping_interval)
        if self.usage is not None and account is not None:
            stream.account = (self.usage, account, validated.model.model)
        return stream

    async def count_tokens(self, validated: ValidatedRequest) -> int:
        backend, _ = self._route(validated)
        return await backend.count_tokens(validated.model)


class MessageStream:
    """A started stream holding its route's slot. The slot is given back exactly once:
    when the events run out, when reading them fails, or at ``aclose()``, which the
    response calls even when the client left before the first event was read (an
    iterator never started would never reach its own ``finally``).

    The backend's events are read by a task of their own into a bounded buffer, and taken
    out in bursts: everything that arrived together goes out as one write to the client
    (one upstream read of several chunks was one write per event before), and waiting
    (with its ping timer) happens once per burst, not once per event."""

    def __init__(
        self,
        first: dict[str, Any],
        events: AsyncIterator[dict[str, Any]],
        limiter: RouteLimiter,
        slot: Any,
        route: str,
        metrics: Metrics,
        ping_interval: float,
    ) -> None:
        self._first: dict[str, Any] | None = first
        self._events = events
        self._limiter = limiter
        self._slot = slot
        self._route = route
        self._metrics = metrics
        self._ping_interval = ping_interval
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._arrived = asyncio.Event()  # the buffer has events, or the reader is done
        self._room = asyncio.Event()  # the buffer has room
        self._room.set()
        self._reader: asyncio.Task[None] | None = None
        self._done = False  # the reader ran out (or failed: ``_failure``)
        self._failure: BaseException | None = None
        self._closed = False
        self.account: tuple[UsageRecorder, Account, str] | None = None  # where its usage goes
        self._usage: dict[str, Any] = {}  # the latest usage the events reported
        self._observe(first)

    def _observe(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            self._usage.update((event.get("message") or {}).get("usage") or {})
        elif kind == "message_delta":
            self._usage.update(event.get("usage") or {})

    async def _read(self) -> None:
        try:
            async for event in self._events:
                self._observe(event)  # what the backend used, whether or not the client reads it
                self._buffer.append(event)
                self._arrived.set()
                if len(self._buffer) >= STREAM_BUFFER:
                    # A slow client: stop reading the backend until it catches up.
                    self._room.clear()
                    await self._room.wait()
        except Exception as exc:
            self._failure = exc
        finally:
            self._done = True
            self._arrived.set()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._one_by_one()

    async def _one_by_one(self) -> AsyncIterator[dict[str, Any]]:
        async for burst in self.bursts():
            for event in burst:
                yield event

    async def bursts(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The events in bursts of those that arrived together; a ``PING`` alone after
        ``ping_interval`` of silence."""
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield [first]
            if self._reader is None:
                self._reader = asyncio.create_task(self._read())
            while True:
                if not self._buffer and not self._done:
                    self._arrived.clear()
                    try:
                        async with asyncio.timeout(self._ping_interval):
                            await self._arrived.wait()
                    except TimeoutError:
                        yield [PING]  # keep quiet connections alive through proxies
                        continue
                burst = list(self._buffer)
                self._buffer.clear()
                self._room.set()
                if burst:
                    yield burst
                if self._done and not self._buffer:
                    if self._failure is not None:
                        raise self._failure
                    break
            record_call(self._limiter, self._metrics, route=self._route, kind="stream")
        except BackendError as exc:
            record_call(self._limiter, self._metrics, route=self._route, kind="stream", error=exc)
            raise
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.account is not None and self._usage:
            # Once, whether the stream ran out or the client left: what the backend used so far.
            recorder, account, model = self.account
            recorder.record(account, model, tokens_of({"usage": self._usage}))
        try:
            if self._reader is not None and not self._reader.done():
                self._reader.cancel()
                with contextlib.suppress(BaseException):
                    await self._reader
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        finally:
            await self._slot.__aexit__(None, None, None)
