"""The outer ASGI layer: a request id on every response, the gate in front of ``/v1``
(credentials, ``anthropic-version``), and the last line of defence that turns any
unexpected exception into a 500 envelope instead of a traceback."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..batches import ResultsGone
from ..metrics import Metrics
from ..protocol.errors import ApiError
from ..protocol.ids import new_request_id
from ..protocol.versions import check_version
from ..store.database import is_database_outage
from .responses import error_body, error_headers
from .surfaces import Surface, surface_for, surface_headers

log = logging.getLogger("batchyard.api")

Gate = Callable[[Scope, Headers], Awaitable[dict[str, str]]]  # returns headers for the response


async def send_error(
    send: Send,
    exc: ApiError,
    request_id: str,
    extra: dict[str, str] | None = None,
    surface: Surface = Surface.ANTHROPIC,
) -> None:
    headers = MutableHeaders()
    headers["content-type"] = "application/json"
    headers["request-id"] = request_id
    for name, value in surface_headers(surface, request_id):
        headers.append(name, value)
    for name, value in {**error_headers(exc), **(extra or {})}.items():
        headers[name] = value
    body = error_body(exc, request_id, surface)
    headers["content-length"] = str(len(body))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers.raw})
    await send({"type": "http.response.body", "body": body})


def _creates_a_batch(scope: Scope) -> bool:
    return scope.get("method") == "POST" and scope.get("path", "").rstrip("/") in ("/v1/messages/batches", "/v1/batches")


def _blind_retry_unsafe(scope: Scope) -> bool:
    """A create that failed after its batch was stored must not be retried blindly: without
    an ``Idempotency-Key`` a retry could make a second batch; with one it finds the first."""
    if not _creates_a_batch(scope):
        return False
    return not any(name.lower() == b"idempotency-key" for name, _ in scope.get("headers", []))


def _handler(scope: Scope) -> str:
    return getattr(scope.get("endpoint"), "__name__", "unmatched")


Endpoint = Callable[[Request], Awaitable[Response]]


class IndexedHeaders(Headers):
    """Request headers looked up through a dict built once (Starlette's ``Headers`` scans
    the whole list for every lookup, and the gate makes several per call). The first of
    repeated headers wins, as in ``Headers``."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        self._index: dict[str, str] = {}
        for key, value in reversed(self._list):
            self._index[key.decode("latin-1")] = value.decode("latin-1")

    def __getitem__(self, key: str) -> str:
        return self._index[key.lower()]

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and key.lower() in self._index

    def get(self, key: str, default: Any = None) -> Any:
        return self._index.get(key.lower(), default)


class ApiMiddleware:
    """Request id, the gate (auth, version), the error envelope, metrics. ``direct`` maps
    (method, exact path) of the busiest routes to their endpoints, called from here without
    Starlette's router and exception layers (a proxied call's fixed cost): their errors are
    enveloped here, as every route's gate errors already are."""

    def __init__(
        self,
        app: ASGIApp,
        gate: Gate,
        metrics: Metrics | None = None,
        access_log: bool = False,
        direct: dict[tuple[str, str], Endpoint] | None = None,
    ) -> None:
        self.app = app
        self.gate = gate
        self.metrics = metrics
        self.access_log = access_log
        self.direct = direct or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        started_at = time.perf_counter()
        status = 0
        extra_headers: dict[str, str] = {}

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["request-id"] = request_id
                for name, value in surface_headers(state.get("surface", Surface.ANTHROPIC), request_id):
                    headers.append(name, value)
                for name, value in extra_headers.items():
                    headers[name] = value
            await send(message)

        async def fail(exc: ApiError) -> None:
            nonlocal status
            status = exc.status
            await send_error(send, exc, request_id, surface=state.get("surface", Surface.ANTHROPIC))

        try:
            path = scope["path"]
            if path.startswith("/v1/"):
                headers = IndexedHeaders(scope)
                surface = state["surface"] = surface_for(path, headers)
                extra_headers = await self.gate(scope, headers)
                if surface is Surface.ANTHROPIC:
                    state["api_version"] = check_version(headers.get("anthropic-version"))
            elif path.startswith("/console/api/"):
                extra_headers = await self.gate(scope, IndexedHeaders(scope))
            endpoint = self.direct.get((scope["method"], path))
            if endpoint is None:
                await self.app(scope, receive, send_with_id)
            else:
                scope["endpoint"] = endpoint  # (its handler name in the metrics)
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send_with_id)
        except ApiError as exc:
            if status:
                raise
            for name, value in extra_headers.items():
                exc.headers.setdefault(name, value)
            await fail(exc)
        except ClientDisconnect:
            # The client went away before its body was read (an aborted upload): its
            # event, not ours; nothing was written, and no one is left to answer.
            status = status or 499
            if self.metrics is not None:
                self.metrics.client_disconnects.inc(handler=_handler(scope))
            log.info("client disconnected before its request was read", extra={"request_id": request_id})
        except Exception as exc:
            if status:
                # The status line is out: all that is left is to cut the connection short
                # (no final chunk), so the client cannot take a partial body for a whole one.
                if not isinstance(exc, ResultsGone):
                    log.exception("error after the response started", extra={"request_id": request_id})
                return
            # A create that failed after its batch was stored must not be retried blindly
            # (the SDKs send no idempotency key), so a create's 5xx says: don't retry
            # (unless it carries an Idempotency-Key: then its retry is safe, and says so).
            retry = not _blind_retry_unsafe(scope)
            if is_database_outage(exc):
                log.error("database unavailable", extra={"request_id": request_id, "error": type(exc).__name__})
                await fail(ApiError("api_error", "The database is unavailable; try again shortly.", status=503, retryable=retry))
            else:
                log.exception("unhandled error", extra={"request_id": request_id, "path": scope.get("path")})
                await fail(ApiError("api_error", "Internal server error", retryable=retry))
        finally:
            self._record(scope, status, time.perf_counter() - started_at, request_id)

    def _record(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        handler = _handler(scope)
        if self.metrics is not None:
            self.metrics.http_requests.inc(handler=handler, status=str(status))
            self.metrics.http_latency.observe(seconds, handler=handler)
        if self.access_log:
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                },
            )
