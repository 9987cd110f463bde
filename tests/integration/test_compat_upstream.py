"""/v1/chat/completions (the openai SDK) and /v1/complete (the 0.x anthropic SDK) through
the openai and anthropic backends against a real third-party server: llama.cpp's own HTTP
server (xllamacpp) with SmolLM2-135M-Instruct. Small max_tokens, temperature 0;
assertions on shapes, finish reasons and usage, never on wording."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import orjson
import pytest

from support.legacy import check_legacy_completions, legacy_completions
from support.llama import LlamaUpstream
from support.server import ServerProcess

UPSTREAM_KEY = "sk-upstream-test"
KINDS = ["openai", "anthropic"]


def route(name: str, backend: str, base: str) -> str:
    url = f"{base}/v1" if backend == "openai" else base
    return (
        f'[[models]]\nid = "{name}"\nbackend = "{backend}"\nmodel = "smollm2"\n'
        f'base_url = "{url}"\napi_key = "{UPSTREAM_KEY}"\nmax_concurrency = 4\n\n'
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    upstream = LlamaUpstream(api_key=UPSTREAM_KEY).start()
    workdir = tmp_path_factory.mktemp("compat")
    config = route("smol-openai", "openai", upstream.url) + route("smol-anthropic", "anthropic", upstream.url)
    proc = ServerProcess(f"sqlite:///{workdir / 'gw.db'}", config_text=config, workdir=workdir)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        upstream.stop()


def client(gateway: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1/", api_key="any", max_retries=0, timeout=120, _strict_response_validation=True
    )


def ask(kind: str, text: str = "Name a color.", **extra: object) -> dict[str, object]:
    messages = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": text}]
    return {"model": f"smol-{kind}", "messages": messages, "max_tokens": 16, "temperature": 0, **extra}


@pytest.mark.parametrize("kind", KINDS)
def test_chat_completion_through_each_backend(gateway: ServerProcess, kind: str) -> None:
    answer = client(gateway).chat.completions.create(**ask(kind))
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.model == f"smol-{kind}" and len(answer.choices) == 1
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < answer.usage.completion_tokens <= 16 and answer.usage.prompt_tokens > 5
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    capped = client(gateway).chat.completions.create(**ask(kind, "Write a long story about the sea.", max_tokens=4))
    assert capped.choices[0].finish_reason == "length" and capped.usage.completion_tokens == 4


@pytest.mark.parametrize("kind", KINDS)
def test_chat_stream_with_usage_through_each_backend(gateway: ServerProcess, kind: str) -> None:
    chunks = list(
        client(gateway).chat.completions.create(**ask(kind), stream=True, stream_options={"include_usage": True})
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2
    assert chunks[-1].choices == [] and 0 < chunks[-1].usage.completion_tokens <= 16
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    same = client(gateway).chat.completions.create(**ask(kind))
    assert "".join(pieces) == same.choices[0].message.content  # temperature 0: the same words either way


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.mark.parametrize("kind", KINDS)
def test_chat_tool_turn_through_each_backend(gateway: ServerProcess, kind: str) -> None:
    """Tools and a tool_calls/tool history reach the upstream and come back well formed
    (whether this small model then calls a tool is its affair)."""
    conversation = [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4 degrees and rain"},
    ]
    answer = client(gateway).chat.completions.create(
        model=f"smol-{kind}", messages=conversation, tools=[WEATHER], max_tokens=16, temperature=0
    )
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    for call in choice.message.tool_calls or []:
        assert call.function.name == "get_weather" and isinstance(orjson.loads(call.function.arguments), dict)
    forced = client(gateway).chat.completions.create(
        **ask(kind, "Weather in Oslo?"), tools=[WEATHER], tool_choice="required"
    )
    assert forced.choices[0].finish_reason in ("stop", "length", "tool_calls")


@pytest.mark.parametrize("kind", KINDS)
def test_chat_errors_through_each_backend(gateway: ServerProcess, kind: str) -> None:
    with pytest.raises(openai.BadRequestError) as two:
        client(gateway).chat.completions.create(**ask(kind), n=2)
    assert two.value.param == "n"


@pytest.mark.parametrize("kind", KINDS)
def test_legacy_completions_through_each_backend(gateway: ServerProcess, kind: str) -> None:
    seen = legacy_completions(gateway.url, f"smol-{kind}")
    check_legacy_completions(seen, f"smol-{kind}")
    assert "".join(e["completion"] for e in seen["stream"]) == seen["first"]["completion"]  # temperature 0
