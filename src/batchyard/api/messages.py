"""Routes of the Messages API: create (JSON or SSE) and count_tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..messages import MessageStream
from ..protocol import sse
from ..protocol.errors import ApiError, error_envelope
from .bodies import OFF_LOOP_BYTES, parse_json, read_body
from .responses import ClosingStreamingResponse, Last, json_response, request_id_of
from .state import account_of, services

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
PING_FRAME = sse.encode(sse.PING)


async def _validated(request: Request, *, count_tokens: bool = False) -> Any:
    svc = services(request)
    data = await read_body(request, svc.settings.limits.max_message_bytes, svc.settings.limits.body_timeout)
    version = request.scope["state"]["api_version"]

    def check() -> Any:
        return svc.messages.validate(parse_json(data), version, count_tokens=count_tokens)

    # A large body is CPU work to parse and check: off the event loop.
    validated = await asyncio.to_thread(check) if len(data) > OFF_LOOP_BYTES else check()
    # file_id sources become the file's content, in the form the model's backend takes.
    backend = svc.router.backend_for(validated.model.model)
    return await svc.files.resolve(validated, request.scope["state"]["workspace_id"], backend)


async def create_message(request: Request) -> Response:
    svc = services(request)
    validated = await _validated(request)
    if not validated.model.stream:
        return json_response(await svc.messages.create(validated, account_of(request)))
    events = await svc.messages.stream(validated, account_of(request))
    return sse_response(_sse(events, request_id_of(request)), events, PING_FRAME, svc.messages.ping_interval)


def sse_response(body: AsyncIterator[bytes], events: MessageStream, ping: bytes, ping_interval: float) -> ClosingStreamingResponse:
    """A stream of server-sent events, ``ping`` after ``ping_interval`` s of quiet."""
    return ClosingStreamingResponse(
        body, on_close=events.aclose, ping=ping, ping_interval=ping_interval, media_type="text/event-stream", headers=SSE_HEADERS
    )


def ends(burst: list[dict[str, Any]]) -> bool:
    """Whether this burst ends the stream (``message_stop`` is the last event there is)."""
    return burst[-1]["type"] == "message_stop"


async def _sse(events: MessageStream, request_id: str | None) -> AsyncIterator[bytes]:
    try:
        async for burst in events.bursts():  # what arrived together, in one write
            framed = b"".join(map(sse.encode, burst))
            yield Last(framed) if ends(burst) else framed
    except ApiError as exc:
        # The status line has gone out already: a failure now travels as an error event.
        yield b"event: error\ndata: " + orjson.dumps(error_envelope(exc.error_type, exc.message, request_id)) + b"\n\n"


async def count_tokens(request: Request) -> Response:
    svc = services(request)
    validated = await _validated(request, count_tokens=True)
    return json_response({"input_tokens": await svc.messages.count_tokens(validated)})


routes = [
    Route("/v1/messages", create_message, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
