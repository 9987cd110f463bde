"""Response bodies: ``Message`` and its ``usage``, with every key the SDKs declare."""

from __future__ import annotations

from typing import Any, Literal

from .ids import new_message_id

ServiceTier = Literal["standard", "batch"]


def usage(
    input_tokens: int,
    output_tokens: int,
    *,
    service_tier: ServiceTier = "standard",
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_creation_input_tokens,
        "cache_read_input_tokens": cache_read_input_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "server_tool_use": None,
        "service_tier": service_tier,
        "inference_geo": "not_available",
    }


def message(
    *,
    model: str,
    content: list[dict[str, Any]],
    stop_reason: str | None,
    stop_sequence: str | None,
    usage: dict[str, Any],
    message_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": message_id or new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "stop_details": None,
        "container": None,
        "usage": usage,
    }


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "citations": None}
