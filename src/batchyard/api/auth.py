"""Who is calling: the API key (``x-api-key`` or ``Authorization: Bearer``), its workspace,
the ``anthropic-workspace-id`` check, and the per-key request rate.

With no key in the database (and no ``--require-keys``) the server runs open: any key is
accepted and everything belongs to the ``default`` workspace. Once a key exists, every
``/v1`` call needs a valid one."""

from __future__ import annotations

import functools
import ipaddress
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import Scope

from ..config import Settings
from ..keys import KeyRing
from ..protocol.errors import MAX_ECHO, ApiError, bounded
from .ratelimit import RequestLimiter, SharedRequestLimiter
from .surfaces import Surface

OPEN_WORKSPACE = "default"


def credential_from(headers: Headers) -> str | None:
    """The API key from ``x-api-key`` or ``Authorization: Bearer`` (new SDKs send the latter)."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class Auth:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ring: KeyRing | None = None  # bound once the database is open
        self.limiter = RequestLimiter()
        self.shared: SharedRequestLimiter | None = None  # bound on PostgreSQL

    def _check_open_mode_origin(self, headers: Headers) -> None:
        """With no keys, anyone who reaches the server is let in, so make sure it is reached on
        purpose: a name in Host must be localhost or the public URL's (a web page that made
        its own name point here, DNS rebinding, sends its own name), and a browser request
        must come from the server's own pages (any other Origin is refused)."""
        host = headers.get("host", "")
        name = _host_name(host)
        public = urlsplit(self.settings.public_url) if self.settings.public_url else None
        allowed = {"localhost"} | ({public.hostname.lower()} if public and public.hostname else set())
        if not (_is_ip(name) or name in allowed or name.endswith(".localhost")):
            raise ApiError(
                "permission_error",
                f"Host {bounded(host, MAX_ECHO)!r} is not allowed while the server runs without API keys: "
                "use localhost or an IP address, or set --public-url",
            )
        origin = headers.get("origin")
        if origin is None:
            return
        own = {f"http://{host}", f"https://{host}"}
        if public is not None:
            own.add(f"{public.scheme}://{public.netloc}")
        if origin.rstrip("/") not in own:
            raise ApiError(
                "permission_error",
                f"Requests from web pages of other origins ({bounded(origin, MAX_ECHO)}) are refused while the server "
                "runs without API keys",
            )

    async def __call__(self, scope: Scope, headers: Headers) -> dict[str, str]:
        """Authenticate and rate-limit one request; returns headers for the response."""
        state = scope["state"]
        key = credential_from(headers)
        if key is None:
            if state.get("surface") is Surface.OPENAI:  # the openai SDK sends the key as a Bearer token
                raise ApiError(
                    "authentication_error", "Authorization header is required (Authorization: Bearer <API key>)"
                )
            raise ApiError("authentication_error", "x-api-key header is required")
        if self.ring is None or not await self.ring.keys_required():
            if is_admin_path(scope["path"]) and (self.ring is None or not _is_admin(await self.ring.check(key))):
                # Open mode opens the API, never the Admin API: that takes an admin key.
                raise ApiError("authentication_error", "invalid x-api-key", code="invalid_api_key")
            self._check_open_mode_origin(headers)
            state["workspace_id"] = OPEN_WORKSPACE
            state["workspace_name"] = OPEN_WORKSPACE
            return {}
        caller = await self.ring.check(key)
        path = scope["path"]
        if caller is None or (caller.admin != is_admin_path(path) and not (caller.admin and is_console_api(path))):
            # An Admin API key opens the Admin API and nothing else (but the console's views,
            # where it reads any workspace's batches); no other key opens the Admin API.
            raise ApiError("authentication_error", "invalid x-api-key", code="invalid_api_key")
        if caller.admin:
            state["admin_key_id"] = caller.key_id
            return {}
        asked = headers.get("anthropic-workspace-id")
        if asked is not None and asked.strip() != caller.workspace_id:
            raise ApiError("permission_error", "anthropic-workspace-id does not match the workspace of this API key")
        state["workspace_id"] = caller.workspace_id
        state["workspace_name"] = caller.workspace_name
        state["key_id"] = caller.key_id
        per_minute, _ = self.ring.limits_for(caller.workspace_id, caller.workspace_name, self.settings.rate_limits)
        if self.shared is not None:
            decision = await self.shared.take(caller.key_id, per_minute)
        else:
            decision = self.limiter.take(caller.key_id, per_minute)
        if decision is None:
            return {}
        limit_headers = decision.headers(state.get("surface", Surface.ANTHROPIC))
        if not decision.allowed:
            raise ApiError(
                "rate_limit_error",
                f"This request would exceed the rate limit of {per_minute} requests per minute for this API key. "
                "Retry after the time in the retry-after header.",
                headers=limit_headers,
                code="rate_limit_exceeded",
            )
        return limit_headers


ADMIN_PREFIX = "/v1/organizations"


def _is_admin(caller: Any) -> bool:
    return caller is not None and caller.admin


def is_admin_path(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def is_console_api(path: str) -> bool:
    return path.startswith("/console/api/")


def _host_name(host: str) -> str:
    """The name in a Host header, without its port (IPv6 literals keep their brackets off)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@functools.lru_cache(maxsize=1024)
def _is_ip(name: str) -> bool:
    """(Cached: asked on every call in open mode, and a client sends the same Host each time.)"""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
