"""The simulator: deterministic, faithful to max_tokens, stop sequences, tools, thinking."""

from __future__ import annotations

import asyncio
import random

import pytest

from batchyard.backends.base import BackendError, GenerateRequest
from batchyard.backends.simulator import SimulatorBackend, count_input_tokens, count_text_tokens, fake_from_schema
from batchyard.protocol.messages import MessageCreateRequest
from batchyard.protocol.sse import message_events
from batchyard.routes import Route


def backend(**options: object) -> SimulatorBackend:
    return SimulatorBackend(Route(id="*", backend="simulator", options=options))


def req(**body: object) -> GenerateRequest:
    full = {"model": "sim", "max_tokens": 200, "messages": [{"role": "user", "content": "Tell me about rivers"}], **body}
    return GenerateRequest(MessageCreateRequest.model_validate(full), full, "2023-06-01")


def text_of(message: dict) -> str:
    return "".join(b["text"] for b in message["content"] if b["type"] == "text")


def test_same_request_same_reply_and_prompt_changes_it() -> None:
    sim = backend()
    a, b = sim.generate(req()), sim.generate(req())
    assert text_of(a) == text_of(b) and a["id"] != b["id"]
    other = sim.generate(req(messages=[{"role": "user", "content": "Tell me about mountains"}]))
    assert text_of(other) != text_of(a)
    assert a["stop_reason"] == "end_turn" and a["stop_sequence"] is None
    assert a["usage"]["output_tokens"] == count_text_tokens(text_of(a))
    assert a["usage"]["service_tier"] == "standard"


def test_max_tokens_cuts_the_same_text() -> None:
    sim = backend()
    full = text_of(sim.generate(req()))
    cut = sim.generate(req(max_tokens=5))
    assert cut["stop_reason"] == "max_tokens"
    assert cut["usage"]["output_tokens"] == 5
    assert full.startswith(text_of(cut))
    empty = sim.generate(req(max_tokens=0))
    assert empty["content"] == [] and empty["stop_reason"] == "max_tokens"


def test_stop_sequences_cut_mid_text() -> None:
    sim = backend()
    full = text_of(sim.generate(req()))
    word = full.split()[6]
    stopped = sim.generate(req(stop_sequences=["zzz-never", word]))
    assert stopped["stop_reason"] == "stop_sequence"
    assert stopped["stop_sequence"] == word
    assert text_of(stopped) == full[: full.index(word)]


def test_tools_are_called_with_schema_valid_input() -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city", "unit", "days"],
    }
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": schema}]
    sim = backend()
    for choice in ({"type": "any"}, {"type": "tool", "name": "get_weather"}, {"type": "auto"}):
        message = sim.generate(req(tools=tools, tool_choice=choice))
        assert message["stop_reason"] == "tool_use"
        call = message["content"][-1]
        assert call["type"] == "tool_use" and call["id"].startswith("toolu_") and call["name"] == "get_weather"
        assert {"city", "unit", "days"} <= set(call["input"])
        assert call["input"]["unit"] in ("c", "f") and 1 <= call["input"]["days"] <= 7
    none = sim.generate(req(tools=tools, tool_choice={"type": "none"}))
    assert none["stop_reason"] == "end_turn"
    answered = sim.generate(
        req(
            tools=tools,
            messages=[
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
            ],
        )
    )
    assert answered["stop_reason"] == "end_turn" and answered["content"][0]["type"] == "text"


def test_fake_values_follow_schemas() -> None:
    rng = random.Random(1)
    for _ in range(50):
        value = fake_from_schema(
            {"type": "object", "properties": {"n": {"type": ["number", "null"], "minimum": 2, "maximum": 3}, "b": {"const": 4}},
             "required": ["n", "b"]},
            rng,
        )
        assert 2 <= value["n"] <= 3 and value["b"] == 4


def test_thinking_block_comes_first() -> None:
    message = backend().generate(req(thinking={"type": "enabled", "budget_tokens": 1024}))
    assert message["content"][0]["type"] == "thinking"
    assert message["content"][0]["thinking"] and message["content"][0]["signature"]
    assert message["content"][1]["type"] == "text"


def test_count_tokens_matches_usage() -> None:
    request = req(system="Be brief.", tools=[{"name": "t", "input_schema": {"type": "object"}}])
    message = backend().generate(request)
    assert message["usage"]["input_tokens"] == count_input_tokens(request.request)
    assert asyncio.run(backend().count_tokens(request.request)) == message["usage"]["input_tokens"]


def test_fault_injection_and_latency() -> None:
    always = backend(error_rate=1.0, error_types=["overloaded_error"])
    with pytest.raises(BackendError) as err:
        asyncio.run(always.create(req()))
    assert err.value.status == 529 and err.value.error_type == "overloaded_error" and err.value.retryable

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await backend(latency_ms=[50, 60]).create(req())
        return loop.time() - start

    assert 0.045 <= asyncio.run(timed()) < 0.5


def test_stream_events_rebuild_the_message() -> None:
    message = backend().generate(req(thinking={"type": "enabled", "budget_tokens": 1024}))
    events = list(message_events(message))
    names = [e["type"] for e in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[1] == "content_block_start" and names[2] == "ping"
    rebuilt = ""
    for event in events:
        if event["type"] == "content_block_delta" and event["delta"]["type"] == "text_delta":
            rebuilt += event["delta"]["text"]
    assert rebuilt == text_of(message)
    assert events[0]["message"]["content"] == [] and events[0]["message"]["stop_reason"] is None
    assert events[-2]["usage"]["output_tokens"] == message["usage"]["output_tokens"]


def test_forced_tool_use_has_no_preamble() -> None:
    """tool_choice any/tool: the real API prefills the turn, so the tool call comes first
    and fits a small max_tokens; under auto the model may say a few words before it."""
    weather = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    sim = backend()
    for choice in ({"type": "any"}, {"type": "tool", "name": "get_weather"}):
        message = sim.generate(req(max_tokens=16, tools=[weather], tool_choice=choice))
        assert [b["type"] for b in message["content"]] == ["tool_use"], choice
        assert message["stop_reason"] == "tool_use"
        assert message["content"][0]["input"]["city"]
    auto = sim.generate(req(tools=[weather], tool_choice={"type": "auto"}))
    assert [b["type"] for b in auto["content"]] == ["text", "tool_use"]
