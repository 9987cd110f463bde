"""Upstream streams made valid: whatever arrives, clients get the SDKs' event order."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard.protocol.sse import accumulate
from batchyard.protocol.stream_repair import StreamCutShort, StreamRepair

START = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
         "content": [], "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}}}
DELTA_END = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 3}}
STOP = {"type": "message_stop"}


def text_start(i: int) -> dict[str, Any]:
    return {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}


def text(i: int, piece: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}}


def repaired(events: list[dict[str, Any]], *, finish: bool = True) -> list[dict[str, Any]]:
    repair = StreamRepair("m", 7, "standard")
    out = [e for event in events for e in repair.feed(event)]
    if finish:
        out += list(repair.finish())
    return out


def assert_valid(events: list[dict[str, Any]]) -> None:
    """The order the SDKs rely on."""
    kinds = [e["type"] for e in events if e["type"] != "ping"]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("message_start") == kinds.count("message_delta") == kinds.count("message_stop") == 1
    open_index = None
    expected = 0
    for event in events:
        if event["type"] == "content_block_start":
            assert open_index is None and event["index"] == expected
            open_index, expected = event["index"], expected + 1
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_index
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_index
            open_index = None
        elif event["type"] == "message_delta":
            assert open_index is None


def test_a_valid_stream_passes_unchanged() -> None:
    events = [START, text_start(0), text(0, "Hi"), {"type": "content_block_stop", "index": 0}, DELTA_END, STOP]
    assert repaired(events) == events


def test_a_missing_message_start_is_made_up() -> None:
    out = repaired([text_start(0), text(0, "Hello"), {"type": "content_block_stop", "index": 0}, DELTA_END, STOP])
    assert_valid(out)
    head = out[0]["message"]
    assert head["id"].startswith("msg_") and head["usage"]["input_tokens"] == 7 and head["model"] == "m"
    assert accumulate(out)["content"] == [{"type": "text", "text": "Hello"}]


def test_deltas_without_a_block_and_blocks_left_open() -> None:
    out = repaired([START, text(0, "a"), text(0, "b"), text_start(1), text(1, "c"), DELTA_END])
    assert_valid(out)
    message = accumulate(out)
    assert [b["text"] for b in message["content"]] == ["ab", "c"]
    assert message["stop_reason"] == "end_turn"


def test_stop_without_message_delta_and_events_after_the_end() -> None:
    out = repaired([START, text_start(0), text(0, "x"), STOP, text(0, "late"), START, STOP])
    assert_valid(out)
    assert accumulate(out)["content"][0]["text"] == "x"


def test_a_second_message_start_is_dropped() -> None:
    out = repaired([START, START, text_start(0), text(0, "x"), DELTA_END, STOP])
    assert_valid(out)


def test_a_stream_that_stops_before_its_message_delta_is_an_error() -> None:
    with pytest.raises(StreamCutShort):
        repaired([START, text_start(0), text(0, "half a sen")])


def test_a_tool_input_with_no_tool_block_is_dropped_not_guessed() -> None:
    orphan = {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{}"}}
    out = repaired([START, orphan, DELTA_END, STOP])
    assert_valid(out)
    assert accumulate(out)["content"] == []
