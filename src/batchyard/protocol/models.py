"""``ModelInfo``, with every field the newest SDK declares."""

from __future__ import annotations

from typing import Any

EPOCH = "1970-01-01T00:00:00Z"


def support(flag: bool) -> dict[str, bool]:
    return {"supported": flag}


def capabilities(
    *,
    batch: bool = True,
    thinking: bool = False,
    image_input: bool = False,
    pdf_input: bool = False,
    structured_outputs: bool = False,
    citations: bool = False,
    thinking_enabled: bool | None = None,
    effort: bool = False,
) -> dict[str, Any]:
    """A ``ModelCapabilities`` object; server-side tools are not run by this server."""
    return {
        "batch": support(batch),
        "citations": support(citations),
        "code_execution": support(False),
        "context_management": {
            "supported": False,
            "clear_thinking_20251015": support(False),
            "clear_tool_uses_20250919": support(False),
            "compact_20260112": support(False),
        },
        "effort": {
            "supported": effort,
            "low": support(effort),
            "medium": support(effort),
            "high": support(effort),
            "xhigh": support(effort),
            "max": support(effort),
        },
        "image_input": support(image_input),
        "pdf_input": support(pdf_input),
        "server_tools": {"supported": False, "code_execution": support(False), "web_search": support(False)},
        "structured_outputs": support(structured_outputs),
        "thinking": {
            "supported": thinking,
            "types": {
                "adaptive": support(thinking),
                "between_tools": support(False),
                "disabled": support(True),
                "enabled": support(thinking if thinking_enabled is None else thinking_enabled),
            },
        },
    }


def model_info(
    model_id: str,
    *,
    display_name: str | None,
    created_at: str | None,
    max_input_tokens: int | None,
    max_tokens: int | None,
    caps: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": display_name or model_id,
        "created_at": created_at or EPOCH,
        "lifecycle": "active",
        "deprecated_at": None,
        "retires_at": None,
        "line": None,
        "max_input_tokens": max_input_tokens,
        "max_tokens": max_tokens,
        "capabilities": caps,
    }
