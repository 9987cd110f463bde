"""Which wire surface a request came through: Anthropic's API or OpenAI's.

One server answers both on the same port. The surface decides the error envelope
(Anthropic's ``{"type": "error", ...}`` or OpenAI's ``{"error": {...}}``), whether
``anthropic-version`` is required, and the names of the rate-limit headers.

The rule: OpenAI-only paths (``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/batches``) are OpenAI's. ``/v1/files`` and ``/v1/models`` are
shared by both APIs; there the ``anthropic-version`` header tells them apart (every Anthropic SDK sends it,
the ``openai`` SDK never does). Every other ``/v1`` path is Anthropic's.
"""

from __future__ import annotations

from enum import StrEnum

from starlette.datastructures import Headers
from starlette.types import Scope


class Surface(StrEnum):
    ANTHROPIC = "anthropic"
    OPENAI = "openai"


_OPENAI_ONLY = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/batches")
_SHARED = ("/v1/files", "/v1/models")


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def surface_for(path: str, headers: Headers) -> Surface:
    if _under(path, _OPENAI_ONLY):
        return Surface.OPENAI
    if _under(path, _SHARED) and "anthropic-version" not in headers:
        return Surface.OPENAI
    return Surface.ANTHROPIC


def surface_of(scope: Scope) -> Surface:
    """The surface the middleware decided for this request (Anthropic's before it ran)."""
    return scope.get("state", {}).get("surface", Surface.ANTHROPIC)


_OPENAI_VERSION = ("openai-version", "2020-10-01")


def surface_headers(surface: Surface, request_id: str) -> tuple[tuple[str, str], ...]:
    """Headers every answer on a surface carries besides ``request-id`` (names no route
    sets, so they can be appended): the ``openai`` SDK reads the request id from
    ``x-request-id``, and Anthropic's OpenAI layer sends ``openai-version``."""
    if surface is Surface.OPENAI:
        return (("x-request-id", request_id), _OPENAI_VERSION)
    return ()
