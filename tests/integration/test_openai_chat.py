"""POST /v1/chat/completions with the official ``openai`` SDK (3.x) against a real server,
on SQLite and PostgreSQL: the same lifecycle, keys, rate limits and metrics as
/v1/messages, with OpenAI's shapes, errors and headers."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import anthropic
import httpx
import openai
import orjson
import pytest

from support.databases import BACKENDS, dispose, new_database
from support.helpers import make_client, make_key, wait_until
from support.server import ServerProcess

CONFIG = """
[limits]
stream_ping_interval = 0.1

[rate_limits.workspaces.tiny]
requests_per_minute = 3

[[models]]
id = "claude-sim"
backend = "simulator"

[[models]]
id = "capped-model"
backend = "simulator"
max_tokens = 64

[[models]]
id = "broken-model"
backend = "simulator"
error_rate = 1.0
error_types = ["overloaded_error"]

[[models]]
id = "midstream-model"
backend = "simulator"
stream_error_rate = 1.0
"""

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a time zone",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
SYSTEM = "You answer in one paragraph."
QUESTION = "Tell me about rivers"


@dataclass
class Gateway:
    server: ServerProcess
    key: str
    tiny_key: str

    def openai(self, key: str | None = None, **options: object) -> openai.OpenAI:
        settings: dict[str, object] = {"max_retries": 0, "_strict_response_validation": True, "timeout": 60}
        return openai.OpenAI(base_url=f"{self.server.url}/v1/", api_key=key or self.key, **{**settings, **options})

    def anthropic(self) -> anthropic.Anthropic:
        return make_client(self.server.url, api_key=self.key)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers={"authorization": f"Bearer {self.key}"}, timeout=60)



@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("chat")
    url = new_database(request.param, workdir)
    key, tiny = make_key("main", url, workdir), make_key("tiny", url, workdir)
    server = ServerProcess(url, config_text=CONFIG, workdir=workdir)
    server.start()
    yield Gateway(server, key, tiny)
    server.stop()
    dispose(url)


def chat(**extra: object) -> dict[str, object]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    return {"model": "claude-sim", "max_tokens": 128, "messages": messages, **extra}


def test_create_is_the_message_of_the_same_question(gateway: Gateway) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(**chat())
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == "claude-sim"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant" and choice.message.tool_calls is None and choice.message.refusal is None
    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["request-id"].startswith("req_") and raw.headers["x-request-id"] == raw.headers["request-id"]
    assert completion._request_id == raw.headers["request-id"]
    assert raw.headers["openai-version"] == "2020-10-01"
    assert raw.headers["x-ratelimit-limit-requests"] == "6000"
    assert "anthropic-ratelimit-requests-limit" not in raw.headers

    # The simulator answers a question the same way whichever API it came through.
    message = gateway.anthropic().messages.create(
        model="claude-sim", max_tokens=128, system=SYSTEM, messages=[{"role": "user", "content": QUESTION}]
    )
    assert choice.message.content == message.content[0].text
    assert completion.usage.prompt_tokens == message.usage.input_tokens
    assert completion.usage.completion_tokens == message.usage.output_tokens
    assert completion.usage.total_tokens == message.usage.input_tokens + message.usage.output_tokens

    short = gateway.openai().chat.completions.create(**chat(max_tokens=None, max_completion_tokens=3))
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    word = message.content[0].text.split()[4]
    stopped = gateway.openai().chat.completions.create(
        **chat(stop=[word], temperature=1.5, top_p=0.9, seed=7, user="me")
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == message.content[0].text[: message.content[0].text.index(word)]


def test_no_anthropic_version_needed_and_either_credential(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.server.url, timeout=30) as http:
        bearer = http.post("/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {gateway.key}"})
        classic = http.post("/v1/chat/completions", json=chat(), headers={"x-api-key": gateway.key})
    assert bearer.status_code == classic.status_code == 200
    assert bearer.json()["choices"][0]["message"]["content"] == classic.json()["choices"][0]["message"]["content"]


def test_multi_turn_with_tool_calls_and_results(gateway: Gateway) -> None:
    client = gateway.openai()
    conversation: list[dict[str, object]] = [{"role": "user", "content": "What's the weather in Oslo?"}]
    first = client.chat.completions.create(model="claude-sim", messages=conversation, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("toolu_")
    arguments = orjson.loads(call.function.arguments)  # a JSON string, as OpenAI sends it
    assert isinstance(arguments["city"], str) and arguments["unit"] in ("celsius", "fahrenheit")

    conversation.append(choice.message.model_dump(exclude_none=True))
    conversation.append({"role": "tool", "tool_call_id": call.id, "content": "4 degrees and rain"})
    second = client.chat.completions.create(model="claude-sim", messages=conversation, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None and second.choices[0].message.content
    assert second.usage.prompt_tokens > first.usage.prompt_tokens

    conversation.append(second.choices[0].message.model_dump(exclude_none=True))
    conversation.append({"role": "user", "content": "And in Rome?"})
    third = client.chat.completions.create(model="claude-sim", messages=conversation, tools=[WEATHER])
    assert third.choices[0].finish_reason == "tool_calls"


def test_forced_and_refused_tool_choice(gateway: Gateway) -> None:
    client = gateway.openai()
    ask = {
        "model": "claude-sim",
        "messages": [{"role": "user", "content": "Weather and time?"}],
        "tools": [WEATHER, CLOCK],
    }
    for _ in range(3):
        named = client.chat.completions.create(
            **ask, tool_choice={"type": "function", "function": {"name": "get_time"}}
        )
        assert [c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"]
    required = client.chat.completions.create(
        **{
            **ask,
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "go"},
            ],
        },
        tool_choice="required",
        parallel_tool_calls=False,
    )
    assert required.choices[0].finish_reason == "tool_calls" and len(required.choices[0].message.tool_calls) == 1
    none = client.chat.completions.create(**ask, tool_choice="none")
    assert none.choices[0].finish_reason == "stop" and none.choices[0].message.tool_calls is None


def test_deprecated_functions(gateway: Gateway) -> None:
    client = gateway.openai()
    first = client.chat.completions.create(
        model="claude-sim",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        functions=[WEATHER["function"]],
        function_call={"name": "get_weather"},
    )
    choice = first.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.function_call.name == "get_weather"
    second = client.chat.completions.create(
        model="claude-sim",
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            choice.message.model_dump(exclude_none=True),
            {"role": "function", "name": "get_weather", "content": "4 degrees"},
        ],
        functions=[WEATHER["function"]],
    )
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


def test_stream_with_include_usage(gateway: Gateway) -> None:
    client = gateway.openai()
    chunks = list(client.chat.completions.create(**chat(stream=True, stream_options={"include_usage": True})))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    whole = client.chat.completions.create(**chat())
    assert text == whole.choices[0].message.content and chunks[-1].usage == whole.usage
    bare = list(client.chat.completions.create(**chat(stream=True)))
    assert all(c.usage is None for c in bare) and bare[-1].choices[0].finish_reason == "stop"

    with gateway.http() as http:
        response = http.post("/v1/chat/completions", json=chat(stream=True))
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    frames = [f for f in response.text.split("\n\n") if f.strip()]
    assert frames[-1] == "data: [DONE]" and all(f.startswith(("data: ", ": ")) for f in frames)


def test_streamed_tool_calls(gateway: Gateway) -> None:
    stream = gateway.openai().chat.completions.create(
        model="claude-sim", messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER], stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += delta.id or ""
                entry["name"] += (delta.function.name or "") if delta.function else ""
                entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
    assert finish == "tool_calls" and list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("toolu_")
    assert set(orjson.loads(calls[0]["arguments"])) == {"city", "unit"}


def test_images_and_thinking_pass_through(gateway: Gateway) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
    client = gateway.openai()
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}", "detail": "low"}},
    ]
    with_image = client.chat.completions.create(model="claude-sim", messages=[{"role": "user", "content": content}])
    without = client.chat.completions.create(
        model="claude-sim", messages=[{"role": "user", "content": "What is this?"}]
    )
    assert with_image.usage.prompt_tokens > without.usage.prompt_tokens + 50  # the image reached the model
    thinking = client.chat.completions.create(
        **chat(), extra_body={"thinking": {"type": "enabled", "budget_tokens": 2000}}
    )
    assert thinking.choices[0].message.content  # the reasoning itself is not returned
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(**chat(), extra_body={"thinking": {"type": "enabled", "budget_tokens": 5}})
    assert bad.value.param == "thinking" and "budget_tokens" in bad.value.message


def test_bad_requests_are_bad_request_errors(gateway: Gateway) -> None:
    client = gateway.openai()
    with pytest.raises(openai.BadRequestError) as two:
        client.chat.completions.create(**chat(n=2))
    assert two.value.status_code == 400 and two.value.param == "n" and two.value.code == "invalid_value"
    assert two.value.type == "invalid_request_error" and two.value.request_id.startswith("req_")
    assert two.value.body == {
        "message": "Invalid 'n': only n=1 is supported, but got 2.",
        "type": "invalid_request_error",
        "param": "n",
        "code": "invalid_value",
    }
    with pytest.raises(openai.BadRequestError) as role:
        client.chat.completions.create(model="claude-sim", messages=[{"role": "robot", "content": "beep"}])
    assert role.value.param == "messages[0].role" and "Invalid value: 'robot'" in role.value.message
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model="claude-sim", messages=[])
    assert empty.value.param == "messages" and empty.value.code == "empty_array"
    with pytest.raises(openai.BadRequestError) as orphan:
        client.chat.completions.create(
            model="claude-sim",
            messages=[{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_1", "content": "y"}],
        )
    assert orphan.value.param == "messages[1].role"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(
            model="capped-model", messages=[{"role": "user", "content": "x"}], max_completion_tokens=65
        )
    assert too_many.value.param == "max_completion_tokens" and "65 > 64" in too_many.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert missing.value.param == "model" and missing.value.code == "model_not_found"
    with gateway.http() as http:
        broken = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and set(broken.json()) == {"error"}
    assert broken.json()["error"]["message"].startswith("The request body is not valid JSON")


def test_keys_and_rate_limits(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as wrong:
        gateway.openai(key="sk-not-a-key").chat.completions.create(**chat())
    assert wrong.value.status_code == 401 and wrong.value.code == "invalid_api_key"
    assert wrong.value.type == "authentication_error"
    with pytest.raises(openai.AuthenticationError) as missing:
        gateway.openai(default_headers={"Authorization": ""}).chat.completions.create(**chat())
    assert missing.value.status_code == 401 and missing.value.request_id.startswith("req_")
    assert missing.value.body["message"] == "Authorization header is required (Authorization: Bearer <API key>)"

    client = gateway.openai(key=gateway.tiny_key)
    answers = [client.chat.completions.with_raw_response.create(**chat()) for _ in range(3)]
    assert [a.headers["x-ratelimit-limit-requests"] for a in answers] == ["3"] * 3
    assert [int(a.headers["x-ratelimit-remaining-requests"]) for a in answers] == [2, 1, 0]
    assert all(a.headers["x-ratelimit-reset-requests"].endswith("s") for a in answers)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(**chat())
    error = limited.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded" and error.type == "rate_limit_error"
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.response.headers["x-should-retry"] == "true"


def test_backend_failures(gateway: Gateway) -> None:
    client = gateway.openai()
    with pytest.raises(openai.InternalServerError) as overloaded:
        client.chat.completions.create(model="broken-model", messages=[{"role": "user", "content": "x"}])
    assert overloaded.value.status_code == 529 and overloaded.value.type == "overloaded_error"
    with pytest.raises(openai.APIError) as midstream:
        for _ in client.chat.completions.create(
            model="midstream-model", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            pass
    assert midstream.value.body is not None and midstream.value.body["type"] in ("api_error", "overloaded_error")


def metric(text: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_same_route_metrics_as_messages(gateway: Gateway) -> None:
    calls = 'batchyard_backend_calls_total{kind="interactive",outcome="ok",route="claude-sim"}'
    streams = 'batchyard_backend_calls_total{kind="stream",outcome="ok",route="claude-sim"}'
    handled = 'batchyard_http_requests_total{handler="create_chat_completion",status="200"}'
    with gateway.http() as http:
        before = http.get("/metrics").text
        gateway.openai().chat.completions.create(**chat())
        list(gateway.openai().chat.completions.create(**chat(stream=True)))
        # A streamed answer is counted once its last byte is sent, which the client can
        # see a moment before the server's own bookkeeping is done.
        wait_until(lambda: metric(http.get("/metrics").text, handled) >= metric(before, handled) + 2, timeout=5)
        after = http.get("/metrics").text
    assert metric(after, calls) == metric(before, calls) + 1
    assert metric(after, streams) == metric(before, streams) + 1
    assert metric(after, handled) == metric(before, handled) + 2
