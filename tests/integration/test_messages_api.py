"""POST /v1/messages (JSON and SSE) and count_tokens, with the official SDK and raw HTTP."""

from __future__ import annotations

import socket

import anthropic
import httpx
import orjson
import pytest

from support.helpers import HEADERS, raw

USAGE_KEYS = {
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "server_tool_use",
    "service_tier",
    "inference_geo",
}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}


def ask(text: str = "Tell me about rivers", **extra: object) -> dict[str, object]:
    return {"model": "claude-sim", "max_tokens": 128, "messages": [{"role": "user", "content": text}], **extra}


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        lines = frame.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        name, data = lines[0][7:], orjson.loads(lines[1][6:])
        assert data["type"] == name
        events.append((name, data))
    return events


def test_create_returns_a_full_message(client: anthropic.Anthropic, server) -> None:
    message = client.messages.create(**ask())
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == "claude-sim"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.service_tier == "standard"
    assert message._request_id.startswith("req_")
    with raw(server.url) as http:
        response = http.post("/v1/messages", json=ask())
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) >= {"id", "type", "role", "content", "model", "stop_reason", "stop_sequence", "usage"}
    assert set(body["usage"]) >= USAGE_KEYS
    assert body["usage"]["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
    assert body["content"] == [{"type": "text", "text": message.content[0].text, "citations": None}]


def test_max_tokens_and_stop_sequences(client: anthropic.Anthropic) -> None:
    full = client.messages.create(**ask()).content[0].text
    short = client.messages.create(**{**ask(), "max_tokens": 3})
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3
    assert full.startswith(short.content[0].text)
    word = full.split()[5]
    stopped = client.messages.create(**ask(), stop_sequences=[word])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == word
    assert stopped.content[0].text == full[: full.index(word)]


def test_sse_event_order_and_headers(server) -> None:
    with raw(server.url) as http:
        response = http.post("/v1/messages", json=ask(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert "content-encoding" not in response.headers
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["id"].startswith("msg_")
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "", "citations": None}}
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert delta["usage"]["output_tokens"] > 1 and delta["usage"]["input_tokens"] == start["usage"]["input_tokens"]
    with raw(server.url) as http:
        same = http.post("/v1/messages", json=ask()).json()
    assert text == same["content"][0]["text"]


def test_gzip_is_never_applied_to_streams(server) -> None:
    with raw(server.url) as http:
        response = http.post("/v1/messages", json=ask(stream=True), headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in response.headers


def test_sdk_stream_helper_and_final_message(client: anthropic.Anthropic) -> None:
    with client.messages.stream(**ask()) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 3
    assert "".join(pieces) == final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == client.messages.create(**ask()).usage.output_tokens


def test_tool_use_streams_input_json_deltas(client: anthropic.Anthropic, server) -> None:
    params = ask("What's the weather in Paris?", tools=[WEATHER_TOOL], tool_choice={"type": "any"})
    with client.messages.stream(**params) as stream:
        final = stream.get_final_message()
    call = final.content[-1]
    assert final.stop_reason == "tool_use"
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_")
    assert isinstance(call.input["city"], str) and call.input["unit"] in ("celsius", "fahrenheit")
    with raw(server.url) as http:
        events = parse_sse(http.post("/v1/messages", json={**params, "stream": True}).text)
    tool_index = next(d["index"] for n, d in events if n == "content_block_start" and d["content_block"]["type"] == "tool_use")
    start = next(d for n, d in events if n == "content_block_start" and d["index"] == tool_index)
    assert start["content_block"]["input"] == {}
    partial = [d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == tool_index]
    assert all(p["type"] == "input_json_delta" for p in partial)
    assert partial[0]["partial_json"] == ""
    assert set(orjson.loads("".join(p["partial_json"] for p in partial))) == {"city", "unit"}


def test_tool_loop_ends_with_text(client: anthropic.Anthropic) -> None:
    first = client.messages.create(**ask("weather in Oslo?", tools=[WEATHER_TOOL]))
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    second = client.messages.create(
        model="claude-sim",
        max_tokens=128,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "4 degrees"}]},
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"


def test_thinking_streams_thinking_and_signature(client: anthropic.Anthropic) -> None:
    params = ask(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024})
    with client.messages.stream(**params) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking and final.content[0].signature
    assert final.content[1].type == "text"
    assert "thinking" in kinds and "signature" in kinds


def test_count_tokens_matches_usage(client: anthropic.Anthropic) -> None:
    params = ask("How many tokens is this sentence, roughly?", system="You count things.", tools=[WEATHER_TOOL])
    counted = client.messages.count_tokens(
        model=params["model"], messages=params["messages"], system=params["system"], tools=params["tools"]
    )
    created = client.messages.create(**{**params, "tool_choice": {"type": "none"}})
    assert counted.input_tokens == created.usage.input_tokens > 0


def test_count_tokens_validates_like_messages(server) -> None:
    with raw(server.url) as http:
        response = http.post("/v1/messages/count_tokens", json={"model": "claude-sim", "max_tokens": 5, "messages": []})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "messages: List should have at least 1 item after validation, not 0"
    with raw(server.url) as http:
        response = http.post(
            "/v1/messages/count_tokens", json={"model": "claude-sim", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        )
    assert response.json()["error"]["message"] == "max_tokens: Extra inputs are not permitted"
    with raw(server.url) as http:
        response = http.post("/v1/messages/count_tokens", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 404
    assert response.json()["error"] == {"type": "not_found_error", "message": "model: nope"}


def test_backend_faults_are_retryable_errors(server) -> None:
    with raw(server.url) as http:
        overloaded = http.post("/v1/messages", json=ask(model="broken-model"))
        internal = http.post("/v1/messages", json=ask(model="api-error-model"))
        stream_start = http.post("/v1/messages", json=ask(model="broken-model", stream=True))
    assert overloaded.status_code == 529
    assert overloaded.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert overloaded.headers["x-should-retry"] == "true"
    assert internal.status_code == 500
    assert internal.json()["error"] == {"type": "api_error", "message": "Internal server error"}
    assert internal.headers["x-should-retry"] == "true"
    assert stream_start.status_code == 529  # failed before the stream began: a plain error response
    sdk = anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=1, _strict_response_validation=True)
    with pytest.raises(anthropic.InternalServerError) as err:
        sdk.messages.create(**ask(model="broken-model"))
    assert err.value.status_code == 529


def test_failure_mid_stream_is_an_error_event(client: anthropic.Anthropic, server) -> None:
    with raw(server.url) as http:
        response = http.post("/v1/messages", json=ask(model="midstream-model", stream=True))
    assert response.status_code == 200
    events = parse_sse(response.text)
    assert [name for name, _ in events][:2] == ["message_start", "content_block_start"]
    name, data = events[-1]
    assert name == "error"
    assert data["error"]["type"] in ("api_error", "overloaded_error")
    assert data["request_id"] == response.headers["request-id"]
    with pytest.raises(anthropic.APIStatusError):
        with client.messages.stream(**ask(model="midstream-model")) as stream:
            for _ in stream:
                pass


def test_pings_fill_long_gaps(server) -> None:
    with raw(server.url) as http:
        response = http.post("/v1/messages", json=ask(model="dripping-model", max_tokens=4, stream=True))
    names = [name for name, _ in parse_sse(response.text)]
    assert names.count("ping") >= 3  # 250 ms between tokens, a ping after 100 ms of silence
    assert names[-1] == "message_stop"


def test_messages_body_over_32_mb_is_refused(server) -> None:
    size = 32 * 1024 * 1024 + 1
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            (
                "POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: k\r\nanthropic-version: 2023-06-01\r\n"
                f"content-type: application/json\r\ncontent-length: {size}\r\n\r\n"
            ).encode()
        )
        reply = b""
        while chunk := sock.recv(65536):  # the server closes the connection after a 413
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413")
    assert b'"request_too_large"' in reply and b"33554432 bytes" in reply
    streamed = httpx.post(
        f"{server.url}/v1/messages/count_tokens",
        content=iter([b'{"model": "', b"x" * (33 * 1024 * 1024), b'"}']),
        headers=HEADERS,
    )
    assert streamed.status_code == 413


def test_version_rules_of_2026_10_21(server) -> None:
    headers_2026 = {**HEADERS, "anthropic-version": "2026-10-21"}
    with raw(server.url) as http:
        old = http.post("/v1/messages", json=ask(temperature=0.5, top_k=3))
        new = http.post("/v1/messages", json=ask(temperature=1.0), headers=headers_2026)
        new_top_p = http.post("/v1/messages", json=ask(top_p=0.9), headers=headers_2026)
        doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d"}}
        assistant_doc = {
            **ask(),
            "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": [doc]}, {"role": "user", "content": "b"}],
        }
        doc_old = http.post("/v1/messages", json=assistant_doc)
        doc_new = http.post("/v1/messages", json=assistant_doc, headers=headers_2026)
        cited = {
            "type": "text",
            "text": "quoted",
            "citations": [{"type": "char_location", "cited_text": "q", "document_index": 0, "document_title": None, "start_char_index": 0, "end_char_index": 1}],
        }
        cited_body = {**ask(), "messages": [{"role": "user", "content": [cited]}]}
        cite_old = http.post("/v1/messages", json=cited_body)
        cite_new = http.post("/v1/messages", json=cited_body, headers=headers_2026)
    assert old.status_code == 200
    assert new.status_code == 400
    assert new.json()["error"]["message"].startswith("temperature: Extra inputs are not permitted")
    assert new_top_p.json()["error"]["message"].startswith("top_p: Extra inputs are not permitted")
    assert doc_old.status_code == 200
    assert doc_new.status_code == 400
    assert doc_new.json()["error"]["message"] == (
        "messages.1.content.0: document blocks are not allowed in assistant messages in anthropic-version 2026-10-21"
    )
    assert cite_old.status_code == 200
    assert cite_new.json()["error"]["message"] == (
        "messages.0.content.0.citations: citations on user text blocks are not allowed in anthropic-version 2026-10-21"
    )
