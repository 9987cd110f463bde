"""chat.completions <-> Messages, both ways, without a server."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchyard.protocol import openai_chat as chat
from batchyard.protocol.errors import ApiError
from batchyard.protocol.messages import ModelResolver
from batchyard.protocol.sse import accumulate, message_events


class Models(ModelResolver):
    def __init__(self, limits: dict[str, int | None] | None = None) -> None:
        self.limits = limits or {"claude-sim": None, "capped": 64}

    def knows(self, model: str) -> bool:
        return model in self.limits

    def max_tokens(self, model: str) -> int | None:
        return self.limits.get(model)


MODELS = Models()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}


def body_of(request: dict[str, Any]) -> dict[str, Any]:
    return chat.translate_request(request, MODELS).validated.body


def refused(request: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        chat.translate_request(request, MODELS)
    return caught.value


def ask(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-sim", "messages": list(messages), **extra}


USER = {"role": "user", "content": "Hello"}


def test_system_and_developer_messages_are_hoisted_and_joined() -> None:
    body = body_of(
        ask(
            {"role": "system", "content": "Be brief."},
            USER,
            {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Bye", "name": "ignored"},
        )
    )
    assert body["system"] == "Be brief.\nBe kind."
    assert body["messages"] == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
        {"role": "user", "content": "Bye"},
    ]


def test_defaults_and_settings() -> None:
    assert body_of(ask(USER))["max_tokens"] == chat.DEFAULT_MAX_TOKENS
    assert body_of({**ask(USER), "model": "capped"})["max_tokens"] == 64  # the route's limit
    assert body_of(ask(USER, max_tokens=10))["max_tokens"] == 10
    assert body_of(ask(USER, max_tokens=10, max_completion_tokens=12))["max_tokens"] == 12
    body = body_of(ask(USER, temperature=1.7, top_p=0.5, stop="END", n=1, seed=3, logprobs=True, user="u", store=True))
    assert body["temperature"] == 1.0 and body["top_p"] == 0.5 and body["stop_sequences"] == ["END"]
    assert not {"seed", "logprobs", "user", "store", "n"} & set(body)
    assert body_of(ask(USER, stop=["  ", "\n", "x"]))["stop_sequences"] == ["x"]  # whitespace-only dropped
    assert body_of(ask(USER, thinking={"type": "enabled", "budget_tokens": 2000}))["thinking"] == {
        "type": "enabled",
        "budget_tokens": 2000,
    }
    streamed = chat.translate_request(ask(USER, stream=True, stream_options={"include_usage": True}), MODELS)
    assert streamed.stream and streamed.include_usage and streamed.validated.body["stream"] is True
    assert not chat.translate_request(ask(USER, stream_options={"include_usage": True}), MODELS).include_usage


def test_user_parts_images_and_dropped_parts() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
        {"type": "text", "text": ""},
    ]
    assert body_of(ask({"role": "user", "content": content}))["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    bad = refused(
        ask({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AA"}}]})
    )
    assert bad.param == "messages[0].content[0].image_url.url" and "image/tiff" in bad.message
    only_audio = refused(ask({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}))
    assert only_audio.param == "messages[0].content"


def test_tool_calls_and_tool_results() -> None:
    body = body_of(
        ask(
            {"role": "user", "content": "Weather in Oslo and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    },
                    {
                        "id": "call.2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "4 degrees"},
            {"role": "tool", "tool_call_id": "call.2", "content": [{"type": "text", "text": "20 degrees"}]},
            {"role": "user", "content": "Thanks"},
            tools=[WEATHER],
            tool_choice="auto",
            parallel_tool_calls=False,
        )
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "4 degrees"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "20 degrees"},
            {"type": "text", "text": "Thanks"},
        ],
    }
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER["function"]["parameters"]}
    ]
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("none", {"type": "none"}),
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    assert body_of(ask(USER, tools=[WEATHER], tool_choice=choice))["tool_choice"] == expected


def test_deprecated_functions_and_function_role() -> None:
    call = chat.translate_request(
        ask(
            USER,
            {
                "role": "assistant",
                "content": "",
                "function_call": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            },
            {"role": "function", "name": "get_weather", "content": "4 degrees"},
            functions=[WEATHER["function"]],
            function_call={"name": "get_weather"},
        ),
        MODELS,
    )
    assert call.functions
    body = call.validated.body
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "function_call_1", "name": "get_weather", "input": {"city": "Oslo"}}
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "function_call_1", "content": "4 degrees"}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    orphan = refused(ask(USER, {"role": "function", "name": "get_weather", "content": "x"}))
    assert orphan.param == "messages[1].role"


@pytest.mark.parametrize(
    ("request_body", "param", "code", "message"),
    [
        ({"model": "claude-sim"}, "messages", "missing_required_parameter", "Missing required parameter: 'messages'."),
        (ask(), "messages", "empty_array", "Invalid 'messages': empty array."),
        (
            ask({"role": "robot", "content": "x"}),
            "messages[0].role",
            "invalid_value",
            "Invalid value: 'robot'. Supported",
        ),
        (ask({"content": "x"}), "messages[0].role", "missing_required_parameter", "Missing required parameter"),
        (
            ask({"role": "user", "content": 3}),
            "messages[0].content",
            "invalid_type",
            "expected one of a string or array",
        ),
        (
            ask({"role": "user", "content": [{"type": "video"}]}),
            "messages[0].content[0].type",
            "invalid_value",
            "'video'",
        ),
        (ask(USER, temperature="hot"), "temperature", "invalid_type", "expected a decimal, but got a string"),
        (ask(USER, temperature=-0.5), "temperature", "decimal_below_min_value", "Expected a value >= 0"),
        (ask(USER, max_tokens=0), "max_tokens", "integer_below_min_value", "Expected a value >= 1"),
        (ask(USER, n=2), "n", "invalid_value", "only n=1 is supported"),
        (
            ask(USER, tools=[{"type": "function", "function": {"name": "bad name"}}]),
            "tools[0].function.name",
            "invalid_value",
            "pattern",
        ),
        ({**ask(USER), "model": "missing"}, "model", "model_not_found", "model: missing"),
        (
            {**ask(USER), "model": "capped", "max_completion_tokens": 100},
            "max_completion_tokens",
            None,
            "max_completion_tokens: 100 > 64",
        ),
        (ask(USER, thinking={"type": "enabled", "budget_tokens": 5}), "thinking", None, "thinking."),
        (
            ask(USER, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}),
            "tool_choice",
            None,
            "nope",
        ),
        ([USER], None, "invalid_type", "expected an object, but got an array"),
    ],
)
def test_errors_name_the_parameter(request_body: Any, param: str | None, code: str | None, message: str) -> None:
    error = refused(request_body)
    assert error.param == param and error.code == code, error.message
    assert message in error.message
    assert error.openai_envelope()["error"]["param"] == param


def test_tool_messages_must_answer_the_calls_before_them() -> None:
    calls = {
        "role": "assistant",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
    }
    stray = refused(ask(USER, {"role": "tool", "tool_call_id": "call_9", "content": "x"}))
    assert stray.param == "messages[1].role" and "must be a response to a preceding message" in stray.message
    unanswered = refused(ask(USER, calls, {"role": "user", "content": "and?"}, tools=[WEATHER]))
    assert unanswered.param == "messages[2].role" and "call_1" in unanswered.message
    bad_arguments = refused(
        ask(USER, {**calls, "tool_calls": [{**calls["tool_calls"][0], "function": {"name": "f", "arguments": "[1"}}]})
    )
    assert bad_arguments.param == "messages[1].tool_calls[0].function.arguments"


def message(content: list[dict[str, Any]], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-sim",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 7,
            "output_tokens": 5,
            "cache_creation_input_tokens": 2,
            "cache_read_input_tokens": 1,
        },
    }


TOOL_USE = {"type": "tool_use", "id": "toolu_01x", "name": "get_weather", "input": {"city": "Oslo"}}


def test_chat_completion_object() -> None:
    call = chat.translate_request(ask(USER), MODELS)
    out = chat.chat_completion(message([{"type": "text", "text": "Hi", "citations": None}]), call, created=5)
    assert out == {
        "id": "msg_01abc",
        "object": "chat.completion",
        "created": 5,
        "model": "claude-sim",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi", "refusal": None, "audio": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
        "service_tier": None,
        "system_fingerprint": None,
    }
    tools = chat.chat_completion(
        message([{"type": "thinking", "thinking": "hm", "signature": "s"}, TOOL_USE], "tool_use"), call
    )
    choice = tools["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_01x", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    ]
    legacy = chat.translate_request(ask(USER, functions=[WEATHER["function"]]), MODELS)
    old = chat.chat_completion(message([TOOL_USE], "tool_use"), legacy)["choices"][0]
    assert old["finish_reason"] == "function_call" and old["message"]["function_call"]["name"] == "get_weather"
    assert "tool_calls" not in old["message"]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_finish_reasons(stop_reason: str, finish: str) -> None:
    call = chat.translate_request(ask(USER), MODELS)
    assert chat.finish_reason(stop_reason, call) == finish


def replay(call: chat.ChatRequest, msg: dict[str, Any]) -> list[dict[str, Any] | None]:
    stream = chat.ChunkStream(call, created=1)
    out: list[dict[str, Any] | None] = []
    for event in message_events(msg):
        chunks = stream.feed(event)
        out.extend([None] if chunks is None else chunks)
    return out


def test_stream_chunks_add_up_to_the_completion() -> None:
    call = chat.translate_request(ask(USER, stream=True, stream_options={"include_usage": True}), MODELS)
    msg = message([{"type": "text", "text": "Rivers run to the sea.", "citations": None}, TOOL_USE], "tool_use")
    assert accumulate(list(message_events(msg)))["content"][1]["input"] == {"city": "Oslo"}
    out = replay(call, msg)
    assert None in out  # the ping, sent on as a comment
    chunks = [c for c in out if c is not None]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_01abc" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Rivers run to the sea."
    calls = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01x",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    arguments = "".join(d["function"]["arguments"] for d in calls)
    assert orjson.loads(arguments) == {"city": "Oslo"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls" and chunks[-2]["usage"] is None
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 15
    plain = [c for c in replay(chat.translate_request(ask(USER, stream=True), MODELS), msg) if c is not None]
    assert all("usage" not in c for c in plain) and plain[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_with_functions_uses_function_call_deltas() -> None:
    call = chat.translate_request(ask(USER, stream=True, functions=[WEATHER["function"]]), MODELS)
    chunks = [c for c in replay(call, message([TOOL_USE], "tool_use")) if c is not None]
    deltas = [c["choices"][0]["delta"]["function_call"] for c in chunks if "function_call" in c["choices"][0]["delta"]]
    assert deltas[0] == {"name": "get_weather", "arguments": ""}
    assert orjson.loads("".join(d["arguments"] for d in deltas)) == {"city": "Oslo"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"
