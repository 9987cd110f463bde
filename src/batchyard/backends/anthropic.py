"""Backend for any Anthropic-compatible server, the real API included.

Requests are forwarded as they came (after our own validation), with the route's ``model``
in place of the client's when set; responses and streams come back with our guarantees
made good: ``msg_`` ids, every ``usage`` key, our ``service_tier``, and ``stop_reason``
consistent with ``stop_sequence``. Route options: ``base_url`` (the root, as the Anthropic
SDK takes it, e.g. ``https://api.anthropic.com``; or a list), ``api_key`` or
``api_key_env``, ``model``, ``timeout``, ``connect_timeout``, ``max_connections``,
``version`` (the ``anthropic-version`` to send; default: the client's).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from ..protocol import responses
from ..protocol.errors import STATUS_BY_TYPE
from ..protocol.ids import new_message_id
from ..protocol.messages import CountTokensRequest, MessageCreateRequest
from ..protocol.responses import ServiceTier
from ..protocol.stream_repair import StreamCutShort, StreamRepair
from .base import BackendError, GenerateRequest
from .simulator import count_input_tokens
from .upstream import (
    KNOWN_ERROR_TYPES,
    HttpBackend,
    HttpBackendOptions,
    json_or_none,
    post_stream,
    sse_bursts,
)

log = logging.getLogger("batchyard.anthropic")


class AnthropicOptions(HttpBackendOptions):
    version: str | None = None


def normalize_usage(usage: Any, tier: ServiceTier) -> dict[str, Any]:
    usage = usage if isinstance(usage, dict) else {}
    full = responses.usage(
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        service_tier=tier,
        cache_creation_input_tokens=int(usage.get("cache_creation_input_tokens") or 0),
        cache_read_input_tokens=int(usage.get("cache_read_input_tokens") or 0),
    )
    for key in ("cache_creation", "server_tool_use", "inference_geo", "output_tokens_details"):
        if usage.get(key) is not None:
            full[key] = usage[key]
    return full


def normalize_message(message: dict[str, Any], model: str | None, tier: ServiceTier) -> dict[str, Any]:
    out = dict(message)
    if not str(out.get("id", "")).startswith("msg_"):
        out["id"] = new_message_id()
    if model is not None:
        out["model"] = model
    out.setdefault("type", "message")
    out.setdefault("role", "assistant")
    out.setdefault("content", [])
    out.setdefault("stop_sequence", None)
    out.setdefault("stop_details", None)
    out.setdefault("container", None)
    if out.get("stop_sequence") and out.get("stop_reason") == "end_turn":
        out["stop_reason"] = "stop_sequence"  # some servers name the sequence but not the reason
    out["usage"] = normalize_usage(out.get("usage"), tier)
    return out


class AnthropicBackend(HttpBackend):
    name = "anthropic"
    options_model = AnthropicOptions
    options: AnthropicOptions

    def _headers(self, version: str) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": self.options.version or version}
        key = self.options.resolve_key()
        if key:
            headers["x-api-key"] = key
        return headers

    def _body(self, req: GenerateRequest, *, stream: bool) -> dict[str, Any]:
        body = dict(req.body)
        if self.options.model:
            body["model"] = self.options.model
        body.pop("stream", None)
        if stream:
            body["stream"] = True
        return body

    async def create(self, req: GenerateRequest) -> dict[str, Any]:
        body = orjson.dumps(self._body(req, stream=False))
        _, payload = await self.post_json("/v1/messages", body, self._headers(req.version))
        if not isinstance(payload, dict) or payload.get("type") != "message":
            raise BackendError(502, "the upstream's answer is not a Message", error_type="api_error")
        model = req.request.model if self.options.model else None
        return normalize_message(payload, model, req.service_tier)

    async def stream_bursts(self, req: GenerateRequest) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The events of each network read together, normalized and repaired."""
        assert self.pool is not None, "backend not started"
        model = req.request.model if self.options.model else None
        body = orjson.dumps(self._body(req, stream=True))
        headers = {**self._headers(req.version), "accept": "text/event-stream"}
        # Whatever the upstream sends, clients get a valid event sequence (see StreamRepair).
        repair = StreamRepair(req.request.model, count_input_tokens(req.request), req.service_tier)
        burst: list[dict[str, Any]] = []
        try:
            async with self.pool.use() as lease, post_stream(lease, "/v1/messages", body, headers) as response:
                async for events in sse_bursts(response):
                    for name, data in events:
                        event = json_or_none(data.encode())
                        if not isinstance(event, dict):
                            raise BackendError(502, "the upstream sent a stream event that is not a JSON object")
                        kind = name or event.get("type")
                        if kind == "error":
                            raise _stream_error(event)
                        event = {**event, "type": kind}
                        if kind == "message_start" and isinstance(event.get("message"), dict):
                            event = {**event, "message": normalize_message(event["message"], model, req.service_tier)}
                        elif kind == "message_delta":
                            event = _normalized_delta(event)
                        burst.extend(repair.feed(event))
                        if repair.stopped:
                            break
                    if repair.stopped:
                        break
                    if burst:
                        yield burst
                        burst = []
            try:
                burst.extend(repair.finish())
            except StreamCutShort as exc:
                raise BackendError(502, str(exc), error_type="api_error") from None
        except BackendError:
            if burst:  # what came before the failure still reaches the client, then the error
                yield burst
            raise
        finally:
            if repair.repaired:
                log.info("repaired an upstream stream", extra={"route": self.route.id, "made_up": repair.repaired})
        if burst:
            yield burst

    async def count_tokens(self, request: CountTokensRequest | MessageCreateRequest) -> int:
        body = request.model_dump(
            include={"model", "messages", "system", "tools", "tool_choice", "thinking"}, exclude_none=True, by_alias=True
        )
        if self.options.model:
            body["model"] = self.options.model
        status, payload = await self.post_json(
            "/v1/messages/count_tokens", orjson.dumps(body), self._headers("2023-06-01"), passthrough=(404, 405)
        )
        if status in (404, 405):
            return count_input_tokens(request)  # the upstream has no count_tokens: estimate
        if not isinstance(payload, dict) or not isinstance(payload.get("input_tokens"), int):
            raise BackendError(502, 'the upstream\'s token count is not {"input_tokens": N}', error_type="api_error")
        return payload["input_tokens"]


def _normalized_delta(event: dict[str, Any]) -> dict[str, Any]:
    delta = dict(event.get("delta") or {})
    if delta.get("stop_sequence") and delta.get("stop_reason") == "end_turn":
        delta["stop_reason"] = "stop_sequence"
    delta.setdefault("stop_sequence", None)
    return {**event, "delta": delta}


def _stream_error(event: dict[str, Any]) -> BackendError:
    error: dict[str, Any] = event["error"] if isinstance(event.get("error"), dict) else {}
    declared = error.get("type")
    kind = declared if isinstance(declared, str) and declared in KNOWN_ERROR_TYPES else "api_error"
    status = STATUS_BY_TYPE.get(kind, 500)
    return BackendError(status, str(error.get("message") or "upstream stream failed"), error_type=kind)
