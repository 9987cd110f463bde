"""``POST /v1/complete``: legacy Text Completions, over the same Messages lifecycle as
``/v1/messages`` (the translation is in :mod:`batchyard.protocol.complete`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..messages import MessageStream
from ..protocol import complete, sse
from ..protocol.errors import ApiError, error_envelope
from .bodies import read_json
from .messages import PING_FRAME, ends, sse_response
from .responses import Last, json_response, request_id_of
from .state import account_of, services


async def create_completion(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, svc.settings.limits.max_message_bytes, svc.settings.limits.body_timeout)
    call = complete.translate_request(body, request.scope["state"]["api_version"], svc.messages.router)
    if not call.stream:
        return json_response(complete.completion(await svc.messages.create(call.validated, account_of(request))))
    events = await svc.messages.stream(call.validated, account_of(request))
    return sse_response(_sse(events, request_id_of(request)), events, PING_FRAME, svc.messages.ping_interval)


async def _sse(events: MessageStream, request_id: str | None) -> AsyncIterator[bytes]:
    stream = complete.CompletionStream()
    try:
        async for burst in events.bursts():  # what arrived together, in one write
            framed = b"".join(sse.encode(out) for event in burst for out in stream.feed(event))
            if ends(burst):
                yield Last(framed)
            else:
                yield framed  # (empty as well: one chunk per burst, the first one at once)
    except ApiError as exc:
        # The status line has gone out already: a failure now travels as an error event.
        yield b"event: error\ndata: " + orjson.dumps(error_envelope(exc.error_type, exc.message, request_id)) + b"\n\n"


routes = [Route("/v1/complete", create_completion, methods=["POST"])]
