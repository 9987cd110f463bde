"""Routes of the Messages API: create (JSON or SSE) and count_tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..protocol import sse
from ..protocol.errors import ApiError, error_envelope
from .bodies import read_json
from .responses import json_response, request_id_of
from .state import services

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def _validated(request: Request, *, count_tokens: bool = False) -> Any:
    svc = services(request)
    body = await read_json(request, svc.settings.limits.max_message_bytes, svc.settings.limits.body_timeout)
    validated = svc.messages.validate(body, request.scope["state"]["api_version"], count_tokens=count_tokens)
    # file_id sources become the file's content, in the form the model's backend takes.
    backend = svc.router.backend_for(validated.model.model)
    return await svc.files.resolve(validated, request.scope["state"]["workspace_id"], backend)


async def create_message(request: Request) -> Response:
    svc = services(request)
    validated = await _validated(request)
    if not validated.model.stream:
        return json_response(await svc.messages.create(validated))
    events = await svc.messages.stream(validated)
    return StreamingResponse(
        _sse(events, request_id_of(request)), media_type="text/event-stream", headers=SSE_HEADERS
    )


async def _sse(events: AsyncIterator[dict[str, Any]], request_id: str | None) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield sse.encode(event)
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
