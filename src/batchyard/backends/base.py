"""The one interface every backend implements.

A backend turns a validated Messages request into a ``Message`` (``create``), a stream
of SSE event payloads (``stream``), or an input-token count (``count_tokens``). Failures
are :class:`BackendError`, which says whether the engine may retry.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..protocol.errors import ApiError, error_type_for_status
from ..protocol.messages import CountTokensRequest, MessageCreateRequest
from ..protocol.responses import ServiceTier
from ..routes import Route

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class BackendOptions(BaseModel):
    """Options a route table may set for its backend; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class BackendError(ApiError):
    """A failed backend call, carried as the error the client (or result line) sees."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            error_type or error_type_for_status(status),
            message,
            status=status,
            retryable=status in RETRYABLE_STATUSES if retryable is None else retryable,
            headers={"retry-after": f"{retry_after:g}"} if retry_after is not None else None,
        )
        self.retry_after = retry_after


@dataclass(slots=True)
class GenerateRequest:
    """A validated request on its way to a backend."""

    request: MessageCreateRequest
    body: dict[str, Any]
    version: str
    service_tier: ServiceTier = "standard"


async def events_of(bursts: AsyncGenerator[list[dict[str, Any]], None]) -> AsyncIterator[dict[str, Any]]:
    """The events of a stream of bursts, one by one (closing it when closed early)."""
    try:
        async for burst in bursts:
            for event in burst:
                yield event
    finally:
        await bursts.aclose()


class Backend:
    name: ClassVar[str]
    options_model: ClassVar[type[BackendOptions]] = BackendOptions

    def __init__(self, route: Route) -> None:
        self.route = route
        self.options = self.options_model.model_validate(route.options)

    def preflight(self) -> None:
        """Cheap checks before the server starts (files exist, packages installed); raise
        with a message that names what is wrong."""

    async def start(self) -> None:
        """Open connections or load models; called once before the first request."""

    async def close(self) -> None:
        """Release what ``start`` opened."""

    async def create(self, req: GenerateRequest) -> dict[str, Any]:
        raise NotImplementedError

    def stream(self, req: GenerateRequest) -> AsyncIterator[dict[str, Any]]:
        raise NotImplementedError

    async def stream_bursts(self, req: GenerateRequest) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The stream's events in bursts of those that came together (one network read of
        an upstream, a finished reply): each burst is one write to the client. A backend
        that reads its events in batches overrides this (and ``stream`` becomes
        ``events_of(self.stream_bursts(req))``); by default each event is a burst alone."""
        events = self.stream(req)
        try:
            async for event in events:
                yield [event]
        finally:
            # Closed early (the client left), the stream closes now, not when the collector
            # finds it: its own cleanup (stopping a local model) comes before the slot is freed.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def count_tokens(self, request: CountTokensRequest | MessageCreateRequest) -> int:
        raise NotImplementedError

    def concurrency_limit(self) -> int | None:
        """Calls in flight this route allows (None: no bound of its own)."""
        return self.route.max_concurrency

    def instant(self) -> bool:
        """Whether ``create`` answers without ever waiting (no I/O, no sleep): the engine then
        runs batch lines one after another in one task instead of a task each, which is
        most of what such a call costs."""
        return False

    def capabilities(self) -> dict[str, Any] | None:
        """What ``GET /v1/models`` says this route's model can do (None: unknown)."""
        return None
