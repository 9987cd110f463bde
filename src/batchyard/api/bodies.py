"""Request bodies, read with a size cap enforced while they stream in."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from typing import IO, Any

from starlette.requests import Request

from ..protocol.errors import ApiError, invalid_request
from ..protocol.jsonscan import JsonSyntaxError, loads_document

SPOOL_IN_MEMORY = 8 * 1024 * 1024
SPOOL_WRITE = 1024 * 1024  # bytes gathered before one write to the spool (done on a thread)
OFF_LOOP_BYTES = 256 * 1024  # bodies larger than this are parsed and checked on a thread


def too_large(limit: int) -> ApiError:
    # Closing the connection is what stops the client's upload; otherwise the server would
    # still have to read (and throw away) the rest to reuse the connection.
    return ApiError(
        "request_too_large",
        f"Request exceeds the maximum size of {limit} bytes",
        status=413,
        headers={"connection": "close"},
    )


def too_slow() -> ApiError:
    return ApiError(
        "invalid_request_error",
        "The request body was not received in time",
        status=408,
        headers={"connection": "close"},
        retryable=False,
    )


async def chunks(request: Request, idle_timeout: float) -> AsyncIterator[bytes]:
    """The body as it arrives; a client silent for ``idle_timeout`` seconds gets a 408."""
    stream = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await anext(stream)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise too_slow() from None
        yield chunk


def _check_declared(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)


async def spool_body(request: Request, limit: int, idle_timeout: float) -> IO[bytes]:
    """Copy the body to a temporary file (memory first, then disk), refusing it as soon as
    it passes ``limit`` bytes: a large body is never held whole in memory."""
    _check_declared(request, limit)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    size = 0
    gathered: list[bytes] = []
    waiting = 0
    try:
        async for chunk in chunks(request, idle_timeout):
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            gathered.append(chunk)
            waiting += len(chunk)
            if waiting >= SPOOL_WRITE:
                # Past SPOOL_IN_MEMORY the spool is a file on disk: write it on a thread.
                await asyncio.to_thread(spool.write, b"".join(gathered))
                gathered, waiting = [], 0
        if gathered:
            spool.write(b"".join(gathered))
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


async def read_body(request: Request, limit: int, idle_timeout: float) -> bytes:
    """The whole body (capped at ``limit``: 413), or the API's 408 for a stalled client.
    One timer for the whole read, moved on at each chunk (not one per chunk: this runs
    for every call)."""
    _check_declared(request, limit)
    parts: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(idle_timeout) as silence:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                parts.append(chunk)
                silence.reschedule(loop.time() + idle_timeout)
    except TimeoutError:
        raise too_slow() from None
    return b"".join(parts)


async def read_json(request: Request, limit: int, idle_timeout: float) -> Any:
    """The body parsed as JSON (on a thread when large), or the API's 400/408/413."""
    data = await read_body(request, limit, idle_timeout)
    return await asyncio.to_thread(parse_json, data) if len(data) > OFF_LOOP_BYTES else parse_json(data)


def parse_json(data: bytes) -> Any:
    """JSON as the API parses it; a syntax error is its 400."""
    try:
        return loads_document(data)
    except JsonSyntaxError as exc:
        raise invalid_request(f"The request body is not valid JSON: {exc}") from None
