"""Running the ASGI app under uvicorn, with the guards uvicorn lacks.

* A deadline for request headers: uvicorn waits forever for a connection that sends
  nothing, or sends its headers a byte at a time (slowloris). Here headers must be
  complete ``header_timeout`` seconds after the connection opens or the request begins,
  else the client gets a 408 and the connection is closed.
* A bound on request headers (64 KiB, 100 fields), checked before anything else, as nginx
  does: past it the client gets a 431 and the connection is closed, so header lines sent
  without end cannot fill the server's memory.
* HTTP/1.0 clients get streamed bodies (results, SSE) delimited by the connection's close:
  chunked encoding does not exist in HTTP/1.0.
* A clean exit code: uvicorn re-raises SIGTERM after its graceful shutdown, so a clean stop
  would end with status -15; a finished graceful shutdown is a success, so exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from types import FrameType
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from ..protocol.errors import error_envelope

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100


def _refusal(status: bytes, message: str) -> bytes:
    body = orjson.dumps(error_envelope("invalid_request_error", message, None))
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class CloseDelimitedCycle(RequestResponseCycle):
    """An HTTP/1.0 exchange: a body of unknown length is ended by closing the connection."""

    _close_delimited = False

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            names = {name.lower() for name, _ in message.get("headers", [])}
            if b"content-length" not in names and b"transfer-encoding" not in names:
                self._close_delimited = True
                self.chunked_encoding = False
                self.keep_alive = False
        elif message["type"] == "http.response.body" and self._close_delimited:
            self.expected_content_length = len(message.get("body", b""))  # each piece counts for itself
        await super().send(message)


def _guarded_protocol(header_timeout: float) -> type[HttpToolsProtocol]:
    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _awaiting_headers = True
        _header_bytes = 0
        _header_count = 0

        def _refuse(self, status: bytes, message: str) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(_refusal(status, message))
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            if self._awaiting_headers:
                end = data.find(b"\r\n\r\n")
                self._header_bytes += len(data) if end < 0 else end
                if self._header_bytes > MAX_HEADER_BYTES:
                    self._refuse(b"431 Request Header Fields Too Large", "Request headers exceed 65536 bytes")
                    return
            super().data_received(data)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if self._header_count > MAX_HEADERS:
                self._refuse(b"431 Request Header Fields Too Large", f"Requests may have at most {MAX_HEADERS} headers")
                return
            super().on_header(name, value)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being served: not a header wait
            self.transport.write(_refusal(b"408 Request Timeout", "Request headers were not received in time"))
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._awaiting_headers, self._header_bytes, self._header_count = True, 0, 0  # the next request's

        def on_headers_complete(self) -> None:
            self._disarm()
            self._awaiting_headers = False
            if self.transport.is_closing():
                return
            super().on_headers_complete()
            if self.parser.get_http_version() == "1.0" and self.cycle is not None:
                self.cycle.__class__ = CloseDelimitedCycle

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedHttpToolsProtocol


class Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def serve(
    app: Any,
    *,
    host: str,
    port: int,
    header_timeout: float,
    shutdown_grace: float,
    sockets: list[socket.socket] | None = None,
) -> bool:
    """Run until stopped (on ``sockets`` when given, bound already); False when the server
    could not start."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_guarded_protocol(header_timeout),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(shutdown_grace) + 5,
    )
    server = Server(config)
    server.run(sockets=sockets)
    return server.started
