"""Interactive Messages: validate, route to the backend, answer (JSON, a stream, or a count).

Interactive calls share each route's concurrency limit with the engine's batch work and
go ahead of it in the queue.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from .backends.base import Backend, BackendError, GenerateRequest
from .backends.router import Router
from .engine.limits import RouteLimiter, measured_create, record_call
from .metrics import Metrics
from .protocol.messages import MessageCreateRequest, ValidatedRequest, validate_message_request
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
        """The stream's events. The first burst is produced before this returns, so a
        failure to start is raised here (and becomes an HTTP error); later failures are
        raised by the iterator (and become an ``error`` event). The caller must
        ``aclose()`` it whatever happens (a client may leave before reading anything)."""
        backend, limiter = self._route(validated)
        assert isinstance(validated.model, MessageCreateRequest)
        slot = limiter.slot(interactive=True)
        await slot.__aenter__()
        route = backend.route.id
        try:
            bursts = backend.stream_bursts(GenerateRequest(validated.model, validated.body, validated.version))
            first = await anext(bursts)
        except BaseException as exc:
            if isinstance(exc, BackendError):
                record_call(limiter, self.metrics, route=route, kind="stream", error=exc)
            await slot.__aexit__(None, None, None)
            raise
        stream = MessageStream(first, bursts, limiter, slot, route, self.metrics)
        if self.usage is not None and account is not None:
            stream.account = (self.usage, account, validated.model.model)
        return stream

    async def count_tokens(self, validated: ValidatedRequest) -> int:
        backend, _ = self._route(validated)
        return await backend.count_tokens(validated.model)


class MessageStream:
    """A started stream holding its route's slot, read in bursts (the events that came
    together: one write to the client each). The slot is given back exactly once: when
    the bursts run out, when reading them fails, or at ``aclose()``, which the response
    calls even when the client left before the first burst was read (an iterator never
    started would never reach its own ``finally``).

    The response's task reads the backend itself, so a slow client slows the reading of
    the upstream (TCP's backpressure, end to end), and pings in long silences are the
    response's business (``ClosingStreamingResponse``), not a reader task's."""

    def __init__(
        self,
        first: list[dict[str, Any]],
        bursts: AsyncGenerator[list[dict[str, Any]], None],
        limiter: RouteLimiter,
        slot: Any,
        route: str,
        metrics: Metrics,
    ) -> None:
        self._first: list[dict[str, Any]] | None = first
        self._bursts = bursts
        self._limiter = limiter
        self._slot = slot
        self._route = route
        self._metrics = metrics
        self._closed = False
        self.account: tuple[UsageRecorder, Account, str] | None = None  # where its usage goes
        self._usage: dict[str, Any] = {}  # the latest usage the events reported
        self._observe(first)

    def _observe(self, burst: list[dict[str, Any]]) -> None:
        """The usage the events report: what the backend used, whether or not the client
        reads it all."""
        for event in burst:
            kind = event.get("type")
            if kind == "message_start":
                self._usage.update((event.get("message") or {}).get("usage") or {})
            elif kind == "message_delta":
                self._usage.update(event.get("usage") or {})

    async def bursts(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The events in bursts of those that arrived together (never an empty one)."""
        try:
            if self._first is not None:
                first, self._first = self._first, None
                if first:
                    yield first
            async for burst in self._bursts:
                self._observe(burst)
                if burst:
                    yield burst
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
            with contextlib.suppress(Exception):
                await self._bursts.aclose()
        finally:
            await self._slot.__aexit__(None, None, None)
