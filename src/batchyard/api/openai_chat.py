"""``POST /v1/chat/completions``: Anthropic's OpenAI SDK compatibility, over the same
Messages lifecycle as ``/v1/messages`` (one path for every backend; the translation is in
:mod:`batchyard.protocol.openai_chat`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..messages import MessageStream
from ..protocol import openai_chat
from ..protocol.errors import ApiError
from .bodies import read_json
from .messages import ends, sse_response
from .responses import Last, json_response
from .state import account_of, services

PING_COMMENT = b": ping\n\n"  # a comment: keeps proxies from closing a quiet stream
DONE = b"data: [DONE]\n\n"


async def create_chat_completion(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, svc.settings.limits.max_message_bytes, svc.settings.limits.body_timeout)
    call = openai_chat.translate_request(body, svc.messages.router)
    if not call.stream:
        return json_response(openai_chat.chat_completion(await svc.messages.create(call.validated, account_of(request)), call))
    events = await svc.messages.stream(call.validated, account_of(request))
    return sse_response(_chunks(events, call), events, PING_COMMENT, svc.messages.ping_interval)


async def _chunks(events: MessageStream, call: openai_chat.ChatRequest) -> AsyncIterator[bytes]:
    stream = openai_chat.ChunkStream(call)
    ended = False  # [DONE] went out with the last burst
    try:
        async for burst in events.bursts():  # what arrived together, in one write
            framed = []
            for event in burst:
                chunks = stream.feed(event)
                if chunks is None:
                    framed.append(PING_COMMENT)
                    continue
                framed += [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks]
            if ends(burst):
                ended = True
                yield Last(b"".join(framed) + DONE)
            else:
                yield b"".join(framed)  # (empty as well: one chunk per burst, the first one at once)
    except ApiError as exc:
        # The status line has gone out already: OpenAI's streams carry a failure as a data
        # line with an `error` object, which the openai SDK raises as an APIError.
        yield b"data: " + orjson.dumps(exc.openai_envelope()) + b"\n\n"
        return
    if not ended:
        yield DONE


routes = [Route("/v1/chat/completions", create_chat_completion, methods=["POST"])]
