"""A streamed message gives its route slot back when the response ends, however it ends:
also when the client left before the first event went out (before, such a slot was held
until garbage collection found the abandoned iterator, or for good if it never started)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

from batchyard.api.messages import SSE_HEADERS, _sse
from batchyard.api.responses import ClosingStreamingResponse, Last
from batchyard.backends.base import Backend, GenerateRequest
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


def test_a_reply_ready_at_once_goes_out_in_one_write_with_the_end_of_the_response() -> None:
    """The simulator at 0 ms has the whole reply at once: one burst, framed in one body
    message that also ends the response (no separate empty terminator), and the stream's
    bookkeeping (its slot, its call in the metrics) still runs to the end."""

    async def scenario() -> tuple[list[dict[str, object]], int, float]:
        router = Router([Route(id="*", backend="simulator", max_concurrency=1)])
        limiters = make_limiters(router)
        metrics = Metrics()
        messages = Messages(router, limiters, metrics)
        body = {"model": "m", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        stream = await messages.stream(messages.validate(body, "2023-06-01"))
        response = ClosingStreamingResponse(
            _sse(stream, None), on_close=stream.aclose, media_type="text/event-stream", headers=SSE_HEADERS
        )
        sent: list[dict[str, object]] = []
        gone = asyncio.Event()

        async def receive() -> dict[str, str]:
            await gone.wait()  # the client stays until the response is complete
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                gone.set()  # as uvicorn's receive() does once the response is complete
            await asyncio.sleep(0)

        scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "POST", "path": "/v1/messages"}
        await response(scope, receive, send)
        calls = metrics.backend_calls.values[(("kind", "stream"), ("outcome", "ok"), ("route", "*"))]
        return sent, limiters[0].active, calls

    sent, active, calls = asyncio.run(scenario())
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    body = sent[1]["body"]
    assert isinstance(body, bytes) and sent[1]["more_body"] is False
    names = [line.split(b": ", 1)[1] for line in body.split(b"\n") if line.startswith(b"event: ")]
    assert names[0] == b"message_start" and names[-2:] == [b"message_delta", b"message_stop"]
    assert (active, calls) == (0, 1)


def test_pings_wait_for_a_slow_client_instead_of_spinning() -> None:
    """A quiet stream gets a ping each interval; while a write to a slow client is under
    way there is none on top of it, and the watcher waits an interval before it looks
    again (it must not wake on every turn of the loop until the write is done)."""

    async def scenario() -> tuple[int, list[bytes]]:
        release = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield b"first"
            await asyncio.sleep(0.35)  # a quiet upstream: pings go out
            yield b"second"  # this write blocks: the client reads nothing for a while
            yield Last(b"last")

        async def done() -> None:
            return None

        response = ClosingStreamingResponse(
            body(), on_close=done, ping=b": ping\n\n", ping_interval=0.05, media_type="text/event-stream"
        )
        receives = 0
        sent: list[bytes] = []
        complete = asyncio.Event()

        async def receive() -> dict[str, str]:
            nonlocal receives
            receives += 1
            await complete.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            if message["type"] != "http.response.body":
                return
            chunk = message["body"]
            assert isinstance(chunk, bytes)
            sent.append(chunk)
            if chunk == b"second":
                asyncio.get_running_loop().call_later(0.5, release.set)
                await release.wait()  # paused writing: the client is not reading
            if not message["more_body"]:
                complete.set()

        scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "POST", "path": "/v1/messages"}
        await response(scope, receive, send)
        return receives, sent

    receives, sent = asyncio.run(scenario())
    assert sent[0] == b"first" and sent[-2:] == [b"second", b"last"]
    pings = sent[1:-2]
    assert pings and set(pings) == {b": ping\n\n"}  # the quiet 0.35 s: pings, and only pings
    # Waking on every turn of the loop during the 0.5 s write would be thousands of calls;
    # one per interval is about 17 in all.
    assert receives < 60, receives


def test_no_ping_goes_out_after_the_end_of_the_response() -> None:
    """A ping waiting on a slow client, and then the last chunk waiting behind it: whichever
    the server lets through first, the end of the response is the last write (uvicorn
    refuses any after it)."""

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        waiting: list[asyncio.Future[None]] = []
        sent: list[bytes] = []
        late: list[bytes] = []
        complete = asyncio.Event()
        reading_from = asyncio.get_running_loop().time() + 0.35

        async def body() -> AsyncIterator[bytes]:
            yield b"first"
            await asyncio.sleep(0.2)  # quiet: a ping is due, and the client stops reading
            yield Last(b"end")
            await asyncio.sleep(0.1)  # the run-out after the end suspends too

        async def done() -> None:
            return None

        response = ClosingStreamingResponse(
            body(), on_close=done, ping=b": ping\n\n", ping_interval=0.05, media_type="text/event-stream"
        )

        async def receive() -> dict[str, str]:
            await complete.wait()
            return {"type": "http.disconnect"}

        def reads_again() -> None:
            for gate in reversed(waiting):  # the last write to wait goes first
                gate.set_result(None)
            waiting.clear()

        async def send(message: dict[str, object]) -> None:
            if message["type"] != "http.response.body":
                return
            chunk = message["body"]
            assert isinstance(chunk, bytes)
            loop = asyncio.get_running_loop()
            if not sent:
                loop.call_later(0.35, reads_again)  # the client stops reading until then
            elif loop.time() < reading_from:
                gate = loop.create_future()
                waiting.append(gate)
                await gate
            (late if complete.is_set() else sent).append(chunk)
            if not message["more_body"]:
                complete.set()

        scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "POST", "path": "/v1/messages"}
        await asyncio.wait_for(response(scope, receive, send), 5)
        await asyncio.sleep(0.1)
        return sent, late

    sent, late = asyncio.run(scenario())
    assert late == []
    assert sent[0] == b"first" and sent[-1] == b"end" and set(sent[1:-1]) <= {b": ping\n\n"}


def test_a_backend_stream_closed_early_runs_its_own_cleanup_before_the_slot_is_freed() -> None:
    """The default ``stream_bursts`` wraps ``stream()``: closed at a burst (the client left
    while its write waited), it closes that stream at once, so a backend's own cleanup (a
    local model told to stop) runs before the route's slot goes to the next request."""
    order: list[str] = []

    class Stepping(Backend):
        name = "stepping"

        async def stream(self, req: GenerateRequest) -> AsyncIterator[dict[str, object]]:
            try:
                for number in range(100):
                    yield {"type": "ping", "n": number}
                    await asyncio.sleep(0)
            finally:
                order.append("backend cleaned up")

    async def scenario() -> None:
        backend = Stepping(Route(id="*", backend="simulator"))
        bursts = backend.stream_bursts(None)  # type: ignore[arg-type]
        assert await anext(bursts) == [{"type": "ping", "n": 0}]
        await bursts.aclose()  # as MessageStream.aclose does, just before the slot is freed
        order.append("slot freed")

    gc.disable()  # no help from the collector
    try:
        asyncio.run(scenario())
    finally:
        gc.enable()
    assert order == ["backend cleaned up", "slot freed"]
