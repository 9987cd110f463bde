"""A streamed message gives its route slot back when the response ends, however it ends:
also when the client left before the first event went out (before, such a slot was held
until garbage collection found the abandoned iterator, or for good if it never started)."""

from __future__ import annotations

import asyncio
import gc

from batchyard.api.messages import SSE_HEADERS, _sse
from batchyard.api.responses import ClosingStreamingResponse
from batchyard.backends.router import Router
from batchyard.engine.dispatcher import make_limiters
from batchyard.messages import Messages
from batchyard.metrics import Metrics
from batchyard.routes import Route


def test_a_client_gone_before_the_first_event_frees_the_slot_at_once() -> None:
    async def scenario() -> tuple[int, int]:
        router = Router([Route(id="*", backend="simulator", max_concurrency=1)])
        limiters = make_limiters(router)
        messages = Messages(router, limiters, Metrics())
        body = {"model": "m", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        stream = await messages.stream(messages.validate(body, "2023-06-01"))
        held = limiters[0].active
        response = ClosingStreamingResponse(
            _sse(stream, None), on_close=stream.aclose, media_type="text/event-stream", headers=SSE_HEADERS
        )

        async def receive() -> dict[str, str]:
            return {"type": "http.disconnect"}  # the client is already gone

        async def send(message: dict[str, object]) -> None:
            await asyncio.sleep(0)  # a write to a slow socket waits for it to drain

        scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "POST", "path": "/v1/messages"}
        await response(scope, receive, send)
        return held, limiters[0].active

    gc.disable()  # no help from the collector: the slot must come back by itself
    try:
        held, after = asyncio.run(scenario())
    finally:
        gc.enable()
    assert (held, after) == (1, 0)
