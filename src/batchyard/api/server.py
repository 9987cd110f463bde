"""Running the ASGI app under uvicorn, with two guards uvicorn lacks.

* A deadline for request headers: uvicorn waits forever for a connection that sends
  nothing, or sends its headers a byte at a time (slowloris). Here headers must be
  complete ``header_timeout`` seconds after the connection opens or the request begins,
  else the client gets a 408 and the connection is closed.
* A clean exit code: uvicorn re-raises SIGTERM after its graceful shutdown, so a clean stop
  would end with status -15; a finished graceful shutdown is a success, so exit 0.
"""

from __future__ import annotations

import asyncio
import signal
from types import FrameType
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..protocol.errors import error_envelope


def _guarded_protocol(header_timeout: float) -> type[HttpToolsProtocol]:
    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

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
            body = orjson.dumps(
                error_envelope("invalid_request_error", "Request headers were not received in time", None)
            )
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

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


def serve(app: Any, *, host: str, port: int, header_timeout: float, shutdown_grace: float) -> bool:
    """Run until stopped; False when the server could not start."""
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
    server.run()
    return server.started
