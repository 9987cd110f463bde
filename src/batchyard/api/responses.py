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


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that always runs ``on_close`` once it is done, however it ends:
    also when the client left before the first chunk (then the body iterator was never
    started, and its own ``finally`` never runs)."""

    def __init__(self, content: Any, *, on_close: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream the body; when the client leaves first, stop it (its upstream call closes
        with it). A task of our own waits for the disconnect and cancels the stream:
        Starlette's way, an anyio task group per response, took a quarter of the CPU of a
        whole streamed call (the server here does not raise on a send after a disconnect,
        so the wait is needed)."""
        streaming = asyncio.current_task()
        assert streaming is not None
        state = {"done": False, "left": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not state["done"]:
                state["left"] = True
                streaming.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not state["left"]:
                raise
            streaming.uncancel()  # the client left: the end of this stream, not of the server
        finally:
            state["done"] = True
            watcher.cancel()
            await self._on_close()
        if self.background is not None:
            await self.background()
