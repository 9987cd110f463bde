"""Legacy Text Completions <-> Messages, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard.protocol import complete
from batchyard.protocol.errors import ApiError
from batchyard.protocol.messages import ModelResolver
from batchyard.protocol.sse import message_events


class Models(ModelResolver):
    def knows(self, model: str) -> bool:
        return model in ("claude-sim", "capped")

    def max_tokens(self, model: str) -> int | None:
        return 64 if model == "capped" else None


MODELS = Models()


def body_of(prompt: str, **extra: Any) -> dict[str, Any]:
    request = {"model": "claude-sim", "max_tokens_to_sample": 20, "prompt": prompt, **extra}
    return complete.translate_request(request, "2023-06-01", MODELS).validated.body


def refused(request: dict[str, Any], version: str = "2023-06-01") -> ApiError:
    with pytest.raises(ApiError) as caught:
        complete.translate_request(request, version, MODELS)
    return caught.value


def test_a_transcript_becomes_system_and_messages() -> None:
    body = body_of(
        "You are terse.\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name a river.\n\nAssistant:",
        temperature=0.5,
        top_k=3,
        top_p=0.9,
        stop_sequences=["END"],
        metadata={"user_id": "u1"},
    )
    assert body["system"] == "You are terse."
    assert body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Name a river."},
    ]
    assert body["max_tokens"] == 20 and body["stop_sequences"] == ["END", "\n\nHuman:"]
    assert (body["temperature"], body["top_k"], body["top_p"]) == (0.5, 3, 0.9)
    assert body["metadata"] == {"user_id": "u1"}


def test_prefill_and_light_sanitising() -> None:
    prefilled = body_of("\n\nHuman: Give JSON\n\nAssistant: {")
    assert prefilled["messages"][-1] == {"role": "assistant", "content": "{"}
    assert "system" not in prefilled
    # No leading "\n\n" before "Human:", and trailing spaces: accepted, as the API does.
    assert body_of("Human: Hello, Claude\n\nAssistant: ")["messages"] == [{"role": "user", "content": "Hello, Claude"}]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("Hello, world", complete.MUST_START),
        ("Hello, world\n\nAssistant:", complete.MUST_START),
        ("\n\nAssistant: Hello, world\n\nHuman: Hello, Claude\n\nAssistant:", complete.MUST_START),
        ("\n\nHuman: Hello, Claude", complete.MUST_END),
        (
            "\n\nHuman: Hello, Claude\n\nAssistant: Hello, world\n\nHuman: How many toes do dogs have?",
            complete.MUST_END,
        ),
        ("\n\nHuman: Hello, Claude \nAssistant:", complete.MUST_END),
    ],
)
def test_the_prompt_must_be_a_transcript(prompt: str, message: str) -> None:
    error = refused({"model": "claude-sim", "max_tokens_to_sample": 5, "prompt": prompt})
    assert error.status == 400 and error.error_type == "invalid_request_error" and error.message == message


def test_the_api_s_words_for_a_bad_prompt() -> None:
    assert complete.MUST_START == 'prompt must start with "\n\nHuman:" turn after an optional system prompt'
    assert complete.MUST_END == 'prompt must end with "\n\nAssistant:" turn'


def test_field_errors() -> None:
    good = {"model": "claude-sim", "max_tokens_to_sample": 5, "prompt": "\n\nHuman: Hi\n\nAssistant:"}
    assert refused({"model": "claude-sim", "prompt": "x"}).message == "max_tokens_to_sample: Field required"
    assert refused({**good, "max_tokens_to_sample": 0}).message.startswith(
        "max_tokens_to_sample: Input should be greater"
    )
    assert refused({**good, "temperature": 2}).message.startswith(
        "temperature: Input should be less than or equal to 1"
    )
    assert refused({**good, "messages": []}).message == "messages: Extra inputs are not permitted"
    assert refused({**good, "model": "capped", "max_tokens_to_sample": 100}).message.startswith(
        "max_tokens_to_sample: 100 > 64"
    )
    missing = refused({**good, "model": "nope"})
    assert missing.status == 404 and missing.message == "model: nope"
    assert "removed in anthropic-version 2026-10-21" in refused({**good, "temperature": 0.5}, "2026-10-21").message


def message(text: str, stop_reason: str, stop_sequence: str | None = None) -> dict[str, Any]:
    return {
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-sim",
        "content": [{"type": "text", "text": text, "citations": None}],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }


@pytest.mark.parametrize(
    ("stop_reason", "stop_sequence", "expected"),
    [
        ("end_turn", None, ("stop_sequence", "\n\nHuman:")),
        ("stop_sequence", "END", ("stop_sequence", "END")),
        ("max_tokens", None, ("max_tokens", None)),
    ],
)
def test_completion_object(stop_reason: str, stop_sequence: str | None, expected: tuple[str, str | None]) -> None:
    out = complete.completion(message(" Hello there", stop_reason, stop_sequence))
    assert out == {
        "type": "completion",
        "id": "compl_01abc",
        "completion": " Hello there",
        "stop_reason": expected[0],
        "stop": expected[1],
        "model": "claude-sim",
    }


def test_stream_events() -> None:
    stream = complete.CompletionStream()
    out = [e for event in message_events(message("Rivers run far.", "max_tokens")) for e in stream.feed(event)]
    assert {e["type"] for e in out} == {"completion", "ping"}
    pieces = [e for e in out if e["type"] == "completion"]
    assert "".join(e["completion"] for e in pieces) == "Rivers run far."
    assert all(e["stop_reason"] is None for e in pieces[:-1])
    assert pieces[-1] == {
        "type": "completion",
        "id": "compl_01abc",
        "completion": "",
        "stop_reason": "max_tokens",
        "stop": None,
        "model": "claude-sim",
    }
