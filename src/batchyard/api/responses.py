"""Response helpers: JSON via orjson, and the Anthropic error envelope with its headers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ..protocol.errors import ApiError
from .surfaces import Surface, surface_of


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def page_response(data: list[dict[str, Any]], has_more: bool) -> Response:
    """A list page: ``first_id``/``last_id`` are the SDKs' cursors for the next page."""
    return json_response(
        {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def request_id_of(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def error_body(exc: ApiError, request_id: str | None, surface: Surface = Surface.ANTHROPIC) -> bytes:
    if surface is Surface.OPENAI:
        return orjson.dumps(exc.openai_envelope())
    return orjson.dumps(exc.envelope(request_id))


def error_headers(exc: ApiError) -> dict[str, str]:
    headers = {"x-should-retry": "true" if exc.retryable else "false"}
    headers.update(exc.headers)
    return headers


def error_response(exc: ApiError, request: Request) -> Response:
    """The error in the envelope of the API the request came through."""
    return Response(
        error_body(exc, request_id_of(request), surface_of(request.scope)),
        status_code=exc.status,
        media_type="application/json",
        headers=error_headers(exc),
    )


class Last(bytes):
    """The final chunk of a streamed body: it goes out with the end of the response, in
    one write (the body iterator still runs to its end; nothing it yields after is sent)."""


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that always runs ``on_close`` once it is done, however it ends:
    also when the client left before the first chunk (then the body iterator was never
    started, and its own ``finally`` never runs). With ``ping``, those bytes go out after
    ``ping_interval`` seconds in which nothing did (a quiet upstream), to keep proxies
    from closing the connection.

    The body's first chunk must be ready at once (a stream's first burst is in hand
    before its response starts; an empty chunk is sent as nothing): the watch for the
    client leaving starts after it, so a reply that was complete by then (one ``Last``
    chunk) costs no watcher at all."""

    def __init__(
        self,
        content: Any,
        *,
        on_close: Callable[[], Awaitable[None]],
        ping: bytes | None = None,
        ping_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close
        self._ping = ping
        self._ping_interval = ping_interval

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream the body; when the client leaves first, stop it (its upstream call closes
        with it). One task of our own waits for the disconnect (and sends the pings):
        Starlette's way, an anyio task group per response, took a quarter of the CPU of a
        whole streamed call, and the reader task with a timer per burst that came between
        backend and client before a fifth of what was left (the server here does not raise
        on a send after a disconnect, so the wait is needed)."""
        streaming = asyncio.current_task()
        assert streaming is not None
        loop = asyncio.get_running_loop()
        state = _StreamState(loop.time())

        async def watch() -> None:
            interval = self._ping_interval
            check_at = state.last_sent + interval
            while True:
                if self._ping is None:
                    message = await receive()
                else:
                    try:
                        async with asyncio.timeout_at(check_at):
                            message = await receive()
                    except TimeoutError:
                        now = loop.time()
                        if state.done:
                            return
                        if now - state.last_sent < interval:
                            check_at = state.last_sent + interval  # bytes went out meanwhile
                        elif state.writing.locked():
                            check_at = now + interval  # a slow client: no ping on top of a write
                        else:
                            async with state.writing:
                                if state.done:  # (the last chunk went out while this waited)
                                    return
                                await send({"type": "http.response.body", "body": self._ping, "more_body": True})
                            state.last_sent = loop.time()
                            check_at = state.last_sent + interval
                        continue
                if message["type"] == "http.disconnect":
                    break
            if not state.done:
                state.left = True
                streaming.cancel()

        watcher: asyncio.Task[None] | None = None

        def start_watching() -> None:
            nonlocal watcher
            watcher = loop.create_task(watch())

        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await self._send_body(send, state, loop, start_watching)
        except asyncio.CancelledError:
            if not state.left:
                raise
            streaming.uncancel()  # the client left: the end of this stream, not of the server
        finally:
            state.done = True
            if watcher is not None:
                watcher.cancel()
            await self._on_close()
        if self.background is not None:
            await self.background()

    async def _send_body(
        self, send: Send, state: _StreamState, loop: asyncio.AbstractEventLoop, start_watching: Callable[[], None]
    ) -> None:
        ended = False
        first = True
        async for chunk in self.body_iterator:
            if ended:
                continue  # after the Last chunk: run the iterator out, send nothing more
            if isinstance(chunk, Last):
                # The response is complete with this write: no ping may follow it, and the
                # disconnect the server reports from now on is not the client leaving.
                ended = state.done = True
            if chunk or ended:
                body = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode(self.charset)
                async with state.writing:
                    await send({"type": "http.response.body", "body": body, "more_body": not ended})
                state.last_sent = loop.time()
            if first:
                first = False
                if not ended:
                    start_watching()
        if not ended:
            state.done = True
            async with state.writing:
                await send({"type": "http.response.body", "body": b"", "more_body": False})


class _StreamState:
    __slots__ = ("last_sent", "writing", "done", "left")

    def __init__(self, now: float) -> None:
        self.last_sent = now  # the loop's clock when bytes last went out
        self.writing = asyncio.Lock()  # held by each write: a ping never goes out beside the body's
        self.done = False  # the body is all out (or the stream ended): no more pings, no cancel
        self.left = False  # the client left: the stream was cancelled for it
