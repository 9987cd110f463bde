"""Interactive Messages: validate, route to the backend, answer (JSON, a stream, or a count).

Interactive calls share each route's concurrency limit with the engine's batch work and
go ahead of it in the queue.
"""

from __future__ import annotations

import asyncio
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
    iterator never started would never reach its own ``finally``)."""

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
        self._pending: asyncio.Future[dict[str, Any]] | None = None
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

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield first
            while True:
                if self._pending is None:
                    self._pending = asyncio.ensure_future(anext(self._events))
                done, _ = await asyncio.wait({self._pending}, timeout=self._ping_interval)
                if not done:
                    yield PING  # keep quiet connections alive through proxies
                    continue
                task, self._pending = self._pending, None
                try:
                    event = task.result()
                except StopAsyncIteration:
                    break
                self._observe(event)
                yield event
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
            if self._pending is not None and not self._pending.done():
                self._pending.cancel()
                with contextlib.suppress(BaseException):
                    await self._pending
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        finally:
            await self._slot.__aexit__(None, None, None)
