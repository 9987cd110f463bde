"""One validator for /v1/messages, count_tokens and batch lines: exact messages, and the
same message for the same params wherever they arrive."""

from __future__ import annotations

import copy
from typing import Any

import anthropic
import pytest

from support.helpers import HEADERS, raw, wait_for_end

BASE: dict[str, Any] = {"model": "claude-sim", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}


def with_(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def user(*blocks: Any) -> dict[str, Any]:
    return with_(messages=[{"role": "user", "content": list(blocks)}])


TOOL = {"name": "lookup", "input_schema": {"type": "object"}}
PATTERN_128 = "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'"

CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("empty body", {}, 400, "max_tokens: Field required"),
    ("no max_tokens", with_(max_tokens=...), 400, "max_tokens: Field required"),
    ("no messages", with_(messages=...), 400, "messages: Field required"),
    ("no model", with_(model=...), 400, "model: Field required"),
    ("unknown model", with_(model="claude-nope"), 404, "model: claude-nope"),
    ("model not a string", with_(model=5), 400, "model: Input should be a valid string"),
    ("max_tokens text", with_(max_tokens="many"), 400, "max_tokens: Input should be a valid integer, unable to parse string as an integer"),
    ("max_tokens negative", with_(max_tokens=-1), 400, "max_tokens: Input should be greater than or equal to 0"),
    ("max_tokens over route cap", with_(model="capped-model", max_tokens=65), 400,
     "max_tokens: 65 > 64, which is the maximum allowed number of output tokens for capped-model"),
    ("empty messages", with_(messages=[]), 400, "messages: List should have at least 1 item after validation, not 0"),
    ("messages not a list", with_(messages="hi"), 400, "messages: Input should be a valid list"),
    ("bad role", with_(messages=[{"role": "robot", "content": "x"}]), 400,
     "messages.0.role: Input should be 'user', 'assistant' or 'system'"),
    ("message without content", with_(messages=[{"role": "user"}]), 400, "messages.0.content: Field required"),
    ("content a number", with_(messages=[{"role": "user", "content": 7}]), 400,
     "messages.0.content: Input should be a valid string or a list of content blocks"),
    ("extra key in message", with_(messages=[{"role": "user", "content": "x", "name": "bob"}]), 400,
     "messages.0.name: Extra inputs are not permitted"),
    ("unknown block type", user({"type": "video"}), 400,
     "messages.0.content.0: Input tag 'video' found using 'type' does not match any of the expected tags: 'text', "
     "'image', 'document', 'search_result', 'thinking', 'redacted_thinking', 'tool_use', 'tool_result', "
     "'server_tool_use', 'web_search_tool_result', 'web_fetch_tool_result', 'code_execution_tool_result', "
     "'bash_code_execution_tool_result', 'text_editor_code_execution_tool_result', 'tool_search_tool_result', "
     "'container_upload'"),
    ("block without type", user({"text": "x"}), 400, "messages.0.content.0: Unable to extract tag using discriminator 'type'"),
    ("empty text block", user({"type": "text", "text": ""}), 400,
     "messages.0.content.0.text.text: String should have at least 1 character"),
    ("extra key in text block", user({"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "x": 1}}), 400,
     "messages.0.content.0.text.cache_control.x: Extra inputs are not permitted"),
    ("bad cache ttl", user({"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "2h"}}), 400,
     "messages.0.content.0.text.cache_control.ttl: Input should be '5m' or '1h'"),
    ("image media type", user({"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AA=="}}), 400,
     "messages.0.content.0.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"),
    ("image without source", user({"type": "image"}), 400, "messages.0.content.0.image.source: Field required"),
    ("document title too long", user({"type": "document", "title": "t" * 501, "source": {"type": "text", "media_type": "text/plain", "data": "d"}}), 400,
     "messages.0.content.0.document.title: String should have at most 500 characters"),
    ("tool_use bad id", with_(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": [{"type": "tool_use", "id": "bad id", "name": "t", "input": {}}]}]), 400,
     "messages.1.content.0.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"),
    ("tool_use input not object", with_(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "t", "input": [1]}]}]), 400,
     "messages.1.content.0.tool_use.input: Input should be a valid dictionary"),
    ("tool_result without tool_use", with_(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "tool_result", "tool_use_id": "toolu_x"}]}]), 400,
     "messages.0.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_x. Each `tool_result` block "
     "must have a corresponding `tool_use` block in the previous message."),
    ("tool_result for an older turn", with_(messages=[
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
    ]), 400,
     "messages.4.content.0: unexpected `tool_use_id` found in `tool_result` blocks: t1. Each `tool_result` block "
     "must have a corresponding `tool_use` block in the previous message."),
    ("system a number", with_(system=3), 400, "system: Input should be a valid string or a list of content blocks"),
    ("system image block", with_(system=[{"type": "image"}]), 400, "system.0.type: Input should be 'text'"),
    ("stop_sequences not list", with_(stop_sequences="END"), 400, "stop_sequences: Input should be a valid list"),
    ("temperature too high", with_(temperature=1.5), 400, "temperature: Input should be less than or equal to 1"),
    ("top_p negative", with_(top_p=-0.1), 400, "top_p: Input should be greater than or equal to 0"),
    ("top_k fraction", with_(top_k=1.5), 400, "top_k: Input should be a valid integer, got a number with a fractional part"),
    ("metadata extra", with_(metadata={"user_id": "u", "email": "e"}), 400, "metadata.email: Extra inputs are not permitted"),
    ("metadata user_id too long", with_(metadata={"user_id": "u" * 513}), 400, "metadata.user_id: String should have at most 512 characters"),
    ("tool name pattern", with_(tools=[{"name": "bad name", "input_schema": {"type": "object"}}]), 400, f"tools.0.name: {PATTERN_128}"),
    ("tool schema type", with_(tools=[{"name": "t", "input_schema": {"type": "array"}}]), 400, "tools.0.input_schema.type: Input should be 'object'"),
    ("tool without schema", with_(tools=[{"name": "t"}]), 400, "tools.0.input_schema: Field required"),
    ("duplicate tool names", with_(tools=[TOOL, TOOL]), 400, "tools.1.name: Tool names must be unique. Duplicate name: lookup"),
    ("server tool wrong name", with_(tools=[{"type": "web_search_20250305", "name": "search"}]), 400,
     "tools.0.server: name should be 'web_search' for tool type 'web_search_20250305'"),
    ("tool_choice unknown type", with_(tool_choice={"type": "sometimes"}), 400,
     "tool_choice: Input tag 'sometimes' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"),
    ("tool_choice names no tool", with_(tools=[TOOL], tool_choice={"type": "tool", "name": "other"}), 400,
     "tool_choice.name: Tool 'other' not found in provided tools"),
    ("tool_choice extra", with_(tool_choice={"type": "none", "disable_parallel_tool_use": True}), 400,
     "tool_choice.none.disable_parallel_tool_use: Extra inputs are not permitted"),
    ("thinking budget too small", with_(thinking={"type": "enabled", "budget_tokens": 100}), 400,
     "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"),
    ("thinking adaptive display", with_(thinking={"type": "adaptive", "display": "verbose"}), 400,
     "thinking.adaptive.display: Input should be 'summarized' or 'omitted'"),
    ("service_tier", with_(service_tier="priority"), 400, "service_tier: Input should be 'auto' or 'standard_only'"),
    ("output_config effort", with_(output_config={"effort": "extreme"}), 400,
     "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"),
    ("unknown top-level field", with_(frequency_penalty=0.5), 400, "frequency_penalty: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("name", "body", "status", "message"), CASES, ids=[c[0] for c in CASES])
def test_messages_validation(server, name: str, body: dict[str, Any], status: int, message: str) -> None:
    with raw(server.url) as http:
        response = http.post("/v1/messages", json=body)
    assert response.status_code == status, response.text
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    assert response.json()["error"] == {"type": kind, "message": message}
    assert response.headers["x-should-retry"] == "false"


def test_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


def test_accepts_everything_the_sdk_sends(client: anthropic.Anthropic) -> None:
    """The 'all params' request of the SDK's own generated tests, adapted to this server."""
    message = client.messages.create(
        model="claude-sim",
        max_tokens=64,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral", "ttl": "5m"}}]}],
        cache_control={"type": "ephemeral", "ttl": "5m"},
        container="container_id",
        inference_geo="inference_geo",
        metadata={"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"},
        output_config={"effort": "low", "format": {"type": "json_schema", "schema": {"foo": "bar"}}},
        service_tier="auto",
        stop_sequences=["string"],
        system=[{"type": "text", "text": "Today's date is 2024-06-01.", "cache_control": {"type": "ephemeral", "ttl": "5m"}}],
        thinking={"type": "adaptive", "display": "summarized"},
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        tools=[
            {
                "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
                "name": "name",
                "allowed_callers": ["direct"],
                "cache_control": {"type": "ephemeral", "ttl": "5m"},
                "defer_loading": True,
                "description": "Get the current weather in a given location",
                "eager_input_streaming": True,
                "input_examples": [{"foo": "bar"}],
                "strict": True,
                "type": "custom",
            },
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ],
    )
    assert message.stop_reason in ("end_turn", "tool_use", "max_tokens")


def test_batch_lines_get_the_same_messages_as_messages(client: anthropic.Anthropic, server) -> None:
    chosen = [c for c in CASES if c[0] not in ("empty body",)][:24]
    with raw(server.url) as http:
        expected = {}
        for i, (_name, body, _, _) in enumerate(chosen):
            direct = http.post("/v1/messages", json=body).json()["error"]
            expected[f"case-{i}"] = direct
        created = http.post(
            "/v1/messages/batches",
            json={"requests": [{"custom_id": f"case-{i}", "params": c[1]} for i, c in enumerate(chosen)]},
        )
    assert created.status_code == 200
    batch_id = created.json()["id"]
    wait_for_end(client, batch_id)
    lines = {r.custom_id: r.result for r in client.messages.batches.results(batch_id)}
    assert len(lines) == len(chosen) >= 12
    for custom_id, direct in expected.items():
        result = lines[custom_id]
        assert result.type == "errored", custom_id
        assert {"type": result.error.error.type, "message": result.error.error.message} == direct, custom_id


def test_batch_created_with_2026_applies_its_rules_to_every_line(client: anthropic.Anthropic, server) -> None:
    with raw(server.url) as http:
        created = http.post(
            "/v1/messages/batches",
            headers={**HEADERS, "anthropic-version": "2026-10-21"},
            json={"requests": [
                {"custom_id": "temp", "params": with_(temperature=0.2)},
                {"custom_id": "fine", "params": with_()},
            ]},
        )
        old = http.post(
            "/v1/messages/batches", json={"requests": [{"custom_id": "temp", "params": with_(temperature=0.2)}]}
        )
    new_id, old_id = created.json()["id"], old.json()["id"]
    wait_for_end(client, new_id)
    wait_for_end(client, old_id)
    new_lines = {r.custom_id: r.result for r in client.messages.batches.results(new_id)}
    assert new_lines["temp"].type == "errored"
    assert new_lines["temp"].error.error.message.startswith("temperature: Extra inputs are not permitted")
    assert new_lines["fine"].type == "succeeded"
    assert [r.result.type for r in client.messages.batches.results(old_id)] == ["succeeded"]
