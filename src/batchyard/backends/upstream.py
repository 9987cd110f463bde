"""HTTP upstreams shared by the ``openai`` and ``anthropic`` backends.

Each route keeps one pooled client session per base URL (keep-alive, a bounded number of
connections, connect and read timeouts), closed on shutdown. A route may list several
base URLs: each call goes to the healthy one with the fewest calls outstanding, and one
that keeps failing is left alone for a while (doubling up to 30 s), then sent one probe
at a time until it answers again.

The client is aiohttp rather than httpx. Measured on this project's 2-core machine against
a 50 ms upstream (bench/bench_upstream.py, figures in bench/README.md): a bare httpx loop
manages about 110 calls/s through one client with 64 connections (its pool's bookkeeping
grows with connections x waiters) and about 1,060-1,080/s with the connections split over
clients of 8, CPU-bound; a whole batch through this backend on aiohttp does 1,038/s at 64
connections and 1,543/s at 256. For a batch server in front of vLLM that difference is the
throughput.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from pydantic import Field, field_validator, model_validator
from yarl import URL

from ..routes import Route
from .base import Backend, BackendError, BackendOptions, GenerateRequest, events_of

FAILURES_BEFORE_BENCH = 3
BENCH_FIRST = 1.0
BENCH_MAX = 30.0


class HttpBackendOptions(BackendOptions):
    base_url: str | list[str]
    api_key: str | None = None
    api_key_env: str | None = None
    model: str | None = None  # the upstream's name for the model; default: the requested name
    timeout: float = Field(default=600.0, gt=0)  # seconds without a byte from the upstream (read timeout)
    connect_timeout: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=256, ge=1)

    @field_validator("base_url")
    @classmethod
    def _urls(cls, value: str | list[str]) -> str | list[str]:
        urls = [value] if isinstance(value, str) else value
        if not urls:
            raise ValueError("base_url needs at least one URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"base_url must start with http:// or https://: {url!r}")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> HttpBackendOptions:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("set api_key or api_key_env, not both")
        return self

    def urls(self) -> list[str]:
        urls = [self.base_url] if isinstance(self.base_url, str) else self.base_url
        return [u.rstrip("/") for u in urls]

    def resolve_key(self) -> str | None:
        if self.api_key_env is not None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise BackendError(
                    500,
                    f"the upstream API key variable {self.api_key_env} is not set",
                    error_type="api_error",
                    retryable=False,
                )
            return key
        return self.api_key


@dataclass
class Upstream:
    base_url: str
    session: aiohttp.ClientSession
    proxy: Any = None
    proxy_auth: aiohttp.BasicAuth | None = None
    outstanding: int = 0
    failures: int = 0
    benched_until: float = 0.0
    bench: float = BENCH_FIRST

    def healthy(self, now: float) -> bool:
        if self.benched_until > now:
            return False
        # Back from the bench, a failing upstream gets one probe at a time until it answers.
        return self.failures < FAILURES_BEFORE_BENCH or self.outstanding == 0


@dataclass(frozen=True)
class Lease:
    """One call's share of an upstream: where it goes, and how to send it."""

    base_url: str
    session: aiohttp.ClientSession
    proxy: Any = None  # from HTTP(S)_PROXY / NO_PROXY, read once when the pool opened
    proxy_auth: aiohttp.BasicAuth | None = None

    def url(self, path: str) -> str:
        return self.base_url + path

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Any:
        return self.session.post(self.url(path), data=body, headers=headers, proxy=self.proxy, proxy_auth=self.proxy_auth)


def env_proxy(url: str) -> tuple[Any, aiohttp.BasicAuth | None]:
    """The proxy the environment names for ``url`` (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``NO_PROXY``), or none. Read once per upstream: aiohttp's ``trust_env`` reads the
    environment and ``~/.netrc`` again on every request, the latter on a thread, which was a
    thread hand-off per proxied call."""
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


@dataclass
class UpstreamPool:
    upstreams: list[Upstream] = field(default_factory=list)

    @classmethod
    def open(cls, options: HttpBackendOptions) -> UpstreamPool:
        """Sessions for every base URL. Call from inside the running event loop."""
        timeout = aiohttp.ClientTimeout(total=None, connect=options.connect_timeout, sock_read=options.timeout)
        return cls(
            [
                Upstream(
                    url,
                    aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=options.max_connections, limit_per_host=0),
                        timeout=timeout,
                        json_serialize=lambda value: orjson.dumps(value).decode(),
                        trust_env=False,  # the proxy is read once (env_proxy), not per request
                    ),
                    *env_proxy(url),
                )
                for url in options.urls()
            ]
        )

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.session.close()

    def pick(self) -> Upstream:
        now = time.monotonic()
        healthy = [u for u in self.upstreams if u.healthy(now)]
        if healthy:
            return min(healthy, key=lambda u: u.outstanding)
        return min(self.upstreams, key=lambda u: u.benched_until)  # all failing: try the soonest back

    @asynccontextmanager
    async def use(self) -> AsyncIterator[Lease]:
        """An upstream for one call; failures that say "this server is unwell" count
        against it, anything else (a good answer, a 4xx) counts as health."""
        upstream = self.pick()
        upstream.outstanding += 1
        try:
            yield Lease(upstream.base_url, upstream.session, upstream.proxy, upstream.proxy_auth)
        except BackendError as exc:
            if exc.status in (500, 502, 503, 504):  # unwell; 429/529 are load, the limiter's business
                self._failed(upstream)
            else:
                self._answered(upstream)
            raise
        else:
            self._answered(upstream)
        finally:
            upstream.outstanding -= 1

    @staticmethod
    def _failed(upstream: Upstream) -> None:
        upstream.failures += 1
        if upstream.failures >= FAILURES_BEFORE_BENCH:
            upstream.benched_until = time.monotonic() + upstream.bench
            upstream.bench = min(upstream.bench * 2, BENCH_MAX)

    @staticmethod
    def _answered(upstream: Upstream) -> None:
        upstream.failures = 0
        upstream.bench = BENCH_FIRST
        upstream.benched_until = 0.0


class HttpBackend(Backend):
    """A backend that calls upstream servers: its pool opens on start, closes on close."""

    options: HttpBackendOptions

    def __init__(self, route: Route) -> None:
        super().__init__(route)
        self.pool: UpstreamPool | None = None

    async def start(self) -> None:
        self.pool = UpstreamPool.open(self.options)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    def stream(self, req: GenerateRequest) -> AsyncIterator[dict[str, Any]]:
        """An upstream stream is read in bursts (``stream_bursts``); this is its events one by one."""
        return events_of(self.stream_bursts(req))

    async def post_json(
        self, path: str, body: bytes, headers: dict[str, str], *, passthrough: tuple[int, ...] = ()
    ) -> tuple[int, Any]:
        """POST to an upstream of the pool; (status, parsed body or None). An HTTP error
        (other than the ``passthrough`` statuses) is raised as a BackendError, inside the
        pool's lease so that it counts against that upstream."""
        assert self.pool is not None, "backend not started"
        async with self.pool.use() as lease:
            reply = await post(lease, path, body, headers)
            payload = reply.json()
            if reply.status >= 400 and reply.status not in passthrough:
                raise error_from_response(reply.status, reply.headers, payload)
        return reply.status, payload


# -- calls -----------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json_or_none(self.body)


TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


async def post(lease: Lease, path: str, body: bytes, headers: dict[str, str]) -> Reply:
    """POST and read the whole answer; transport failures become retryable BackendErrors."""
    try:
        async with lease.post(path, body, headers) as response:
            return Reply(response.status, response.headers, await response.read())
    except TRANSPORT_ERRORS as exc:
        raise error_from_transport(exc, lease.base_url) from None


@asynccontextmanager
async def post_stream(lease: Lease, path: str, body: bytes, headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST and hand over the open response; an HTTP error status is raised as a
    BackendError before the caller reads anything."""
    try:
        async with lease.post(path, body, headers) as response:
            if response.status >= 400:
                raise error_from_response(response.status, response.headers, json_or_none(await response.read()))
            yield response
    except TRANSPORT_ERRORS as exc:
        raise error_from_transport(exc, lease.base_url) from None


async def sse_bursts(response: aiohttp.ClientResponse) -> AsyncIterator[list[tuple[str | None, str]]]:
    """``(event name, data)`` for the events of an SSE stream, in bursts: those complete
    after each network read, together (a stream's chunks usually hold several events; the
    client then gets them in one write). Split here rather than with aiohttp's line
    reader, which costs a call chain per line."""
    name: str | None = None
    data: list[str] = []
    rest = b""
    async for chunk in response.content.iter_any():
        lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
        rest = lines.pop()  # what follows the last newline: the start of the next line
        burst: list[tuple[str | None, str]] = []
        for raw_line in lines:
            line = raw_line.decode("utf-8", errors="replace").rstrip("\r")
            if line == "":
                if data:
                    burst.append((name, "\n".join(data)))
                name, data = None, []
                continue
            if line.startswith(":"):
                continue
            field_name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field_name == "event":
                name = value
            elif field_name == "data":
                data.append(value)
        if burst:
            yield burst
    if rest:
        field_name, _, value = rest.decode("utf-8", errors="replace").rstrip("\r").partition(":")
        if field_name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield [(name, "\n".join(data))]


def json_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


# -- errors ------------------------------------------------------------------------------


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())


UPSTREAM_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
KNOWN_ERROR_TYPES = frozenset(UPSTREAM_TYPES.values())


def upstream_message(body: Any, fallback: str) -> str:
    """The upstream's own error message, in OpenAI's or Anthropic's envelope."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return body["message"]
        if isinstance(body.get("detail"), str):
            return body["detail"]
    return fallback


def error_from_response(status: int, headers: Mapping[str, str], body: Any) -> BackendError:
    """An upstream's HTTP error as ours: same meaning, the upstream's words."""
    message = upstream_message(body, f"upstream returned HTTP {status}")
    kind = UPSTREAM_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        declared = body["error"].get("type")
        if isinstance(declared, str) and declared in KNOWN_ERROR_TYPES:
            kind = declared
    return BackendError(status, message, error_type=kind, retry_after=retry_after_seconds(headers))


def error_from_transport(exc: BaseException, base_url: str) -> BackendError:
    """Timeouts and connection failures: retryable, worded without secrets."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return BackendError(504, f"the upstream at {base_url} did not answer in time", error_type="timeout_error")
    return BackendError(
        502, f"could not reach the upstream at {base_url}: {type(exc).__name__}", error_type="api_error", retryable=True
    )
