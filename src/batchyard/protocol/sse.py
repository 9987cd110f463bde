"""Server-sent events for streamed Messages: framing and the API's event order.

Order: ``message_start``; for each content block ``content_block_start``, one or more
``content_block_delta``, ``content_block_stop``; ``message_delta`` with cumulative usage;
``message_stop``. A ``ping`` follows the first block start, as the real service sends.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import orjson

PING = {"type": "ping"}


def encode(event: dict[str, Any]) -> bytes:
    """One SSE frame; the ``event:`` line is what the SDKs dispatch on."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")


def pieces(text: str) -> list[str]:
    """Split text into token-sized pieces (each with the whitespace before it) that
    concatenate back to the text."""
    parts = _PIECE_RE.findall(text)
    rest = len(text) - sum(map(len, parts))
    if rest:
        parts.append(text[len(text) - rest :])
    return parts or [""]


def start_block(block: dict[str, Any]) -> dict[str, Any]:
    """The empty form of a block for ``content_block_start``."""
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": "", "citations": None}
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    if kind in ("tool_use", "server_tool_use"):
        return {**block, "input": {}}
    return block


def block_deltas(block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind = block["type"]
    if kind == "text":
        for piece in pieces(block["text"]):
            yield {"type": "text_delta", "text": piece}
    elif kind == "thinking":
        for piece in pieces(block["thinking"]):
            yield {"type": "thinking_delta", "thinking": piece}
        yield {"type": "signature_delta", "signature": block["signature"]}
    elif kind in ("tool_use", "server_tool_use"):
        yield {"type": "input_json_delta", "partial_json": ""}
        encoded = orjson.dumps(block["input"]).decode()
        for start in range(0, len(encoded), 12):
            yield {"type": "input_json_delta", "partial_json": encoded[start : start + 12]}


def message_events(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The full event sequence for a finished Message."""
    head = copy.deepcopy(message)
    head["content"] = []
    head["stop_reason"] = None
    head["stop_sequence"] = None
    head["usage"] = {**message["usage"], "output_tokens": min(1, message["usage"]["output_tokens"])}
    yield {"type": "message_start", "message": head}
    for index, block in enumerate(message["content"]):
        yield {"type": "content_block_start", "index": index, "content_block": start_block(block)}
        if index == 0:
            yield PING
        for delta in block_deltas(block):
            yield {"type": "content_block_delta", "index": index, "delta": delta}
        yield {"type": "content_block_stop", "index": index}
    yield message_delta(message)
    yield {"type": "message_stop"}


def message_delta(message: dict[str, Any]) -> dict[str, Any]:
    usage = message["usage"]
    return {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
        "usage": {
            "input_tokens": usage["input_tokens"],
            "cache_creation_input_tokens": usage.get("cache_creation_input_tokens"),
            "cache_read_input_tokens": usage.get("cache_read_input_tokens"),
            "output_tokens": usage["output_tokens"],
            "server_tool_use": usage.get("server_tool_use"),
        },
    }


def accumulate(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The Message a stream of events describes (what the SDKs' get_final_message does)."""
    message: dict[str, Any] | None = None
    partial_json: dict[int, str] = {}
    for event in events:
        kind = event["type"]
        if kind == "message_start":
            message = copy.deepcopy(event["message"])
            message["content"] = []
        elif message is None:
            continue
        elif kind == "content_block_start":
            message["content"].append(copy.deepcopy(event["content_block"]))
        elif kind == "content_block_delta":
            block = message["content"][event["index"]]
            delta = event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                partial_json[event["index"]] = partial_json.get(event["index"], "") + delta["partial_json"]
        elif kind == "content_block_stop":
            if event["index"] in partial_json:
                raw = partial_json.pop(event["index"])
                message["content"][event["index"]]["input"] = orjson.loads(raw) if raw else {}
        elif kind == "message_delta":
            message["stop_reason"] = event["delta"].get("stop_reason")
            message["stop_sequence"] = event["delta"].get("stop_sequence")
            for key, value in (event.get("usage") or {}).items():
                if value is not None:
                    message["usage"][key] = value
    if message is None:
        raise ValueError("the stream had no message_start")
    return message
