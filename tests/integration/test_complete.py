"""POST /v1/complete (legacy Text Completions) through the real server, on SQLite and
PostgreSQL: the 0.x ``anthropic`` SDK's completions.create and its stream, and the bytes
on the wire."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson

from support.helpers import raw
from support.legacy import check_legacy_completions, legacy_completions

PROMPT = "\n\nHuman: Tell me about rivers\n\nAssistant:"


def test_legacy_sdk_completions_on_the_simulator(server) -> None:
    seen = legacy_completions(server.url, "claude-sim")
    check_legacy_completions(seen, "claude-sim")
    first, stream = seen["first"], seen["stream"]
    assert "".join(e["completion"] for e in stream) == first["completion"]  # the simulator is deterministic
    assert stream[-1]["stop_reason"] == first["stop_reason"] and len(stream) > 3
    assert seen["short"]["completion"]


def test_completion_is_the_message_of_the_same_transcript(server, client: anthropic.Anthropic) -> None:
    with raw(server.url) as http:
        response = http.post(
            "/v1/complete", json={"model": "claude-sim", "prompt": PROMPT, "max_tokens_to_sample": 200}
        )
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.headers["request-id"].startswith("req_") and "x-request-id" not in response.headers
    body = response.json()
    assert set(body) == {"type", "id", "completion", "stop_reason", "stop", "model"}
    message = client.messages.create(
        model="claude-sim", max_tokens=200, messages=[{"role": "user", "content": "Tell me about rivers"}]
    )
    assert body["completion"] == message.content[0].text
    assert message.stop_reason == "end_turn" and (body["stop_reason"], body["stop"]) == ("stop_sequence", "\n\nHuman:")

    word = body["completion"].split()[3]
    with raw(server.url) as http:
        stopped = http.post(
            "/v1/complete",
            json={
                "model": "claude-sim",
                "prompt": f"Be brief.{PROMPT}",
                "max_tokens_to_sample": 200,
                "stop_sequences": [word],
            },
        ).json()
    assert stopped["stop_reason"] == "stop_sequence" and stopped["stop"] == word


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in text.split("\n\n"):
        if frame.strip():
            name, data = frame.split("\n")
            assert name.startswith("event: ") and data.startswith("data: "), frame
            events.append((name[7:], orjson.loads(data[6:])))
    return events


def test_stream_events_on_the_wire(server) -> None:
    with raw(server.url) as http:
        response = http.post(
            "/v1/complete", json={"model": "claude-sim", "prompt": PROMPT, "max_tokens_to_sample": 8, "stream": True}
        )
        failing = http.post(
            "/v1/complete",
            json={"model": "midstream-model", "prompt": PROMPT, "max_tokens_to_sample": 8, "stream": True},
        )
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = parse_sse(response.text)
    assert {name for name, _ in events} == {"completion", "ping"}
    assert all(data["type"] == name for name, data in events)
    completions = [data for name, data in events if name == "completion"]
    assert completions[-1]["completion"] == "" and completions[-1]["stop_reason"] == "max_tokens"
    assert failing.status_code == 200
    last_name, last = parse_sse(failing.text)[-1]
    assert (
        last_name == "error" and last["type"] == "error" and last["error"]["type"] in ("api_error", "overloaded_error")
    )
    assert last["request_id"] == failing.headers["request-id"]


def test_errors_are_anthropic_s(server) -> None:
    with raw(server.url) as http:
        no_version = http.post(
            "/v1/complete",
            json={"model": "claude-sim", "prompt": PROMPT, "max_tokens_to_sample": 8},
            headers={"anthropic-version": ""},
        )
        end = http.post(
            "/v1/complete", json={"model": "claude-sim", "prompt": "\n\nHuman: Hi", "max_tokens_to_sample": 8}
        )
        missing = http.post("/v1/complete", json={"model": "claude-sim", "prompt": PROMPT})
        unknown = http.post(
            "/v1/complete", json={"model": "claude-sim", "prompt": PROMPT, "max_tokens_to_sample": 8, "n": 2}
        )
        capped = http.post("/v1/complete", json={"model": "capped-model", "prompt": PROMPT, "max_tokens_to_sample": 65})
    assert (
        no_version.status_code == 400
        and no_version.json()["error"]["message"] == "anthropic-version: header is required"
    )
    for response, message in [
        (end, 'prompt must end with "\n\nAssistant:" turn'),
        (missing, "max_tokens_to_sample: Field required"),
        (unknown, "n: Extra inputs are not permitted"),
        (
            capped,
            "max_tokens_to_sample: 65 > 64, which is the maximum allowed number of output tokens for capped-model",
        ),
    ]:
        assert response.status_code == 400
        assert response.json() == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": message},
            "request_id": response.headers["request-id"],
        }
