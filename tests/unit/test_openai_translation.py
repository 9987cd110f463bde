"""Anthropic <-> OpenAI translation, both ways, and the HTTP backends against an
in-process fake upstream (an aiohttp server on loopback, in the test's own event loop)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest
from aiohttp import web

from batchyard.backends.anthropic import AnthropicBackend, normalize_message
from batchyard.backends.base import BackendError, GenerateRequest
from batchyard.backends.openai import OpenAIBackend
from batchyard.backends.openai_translate import StreamTranslator, from_chat_completion, to_chat_completion
from batchyard.backends.upstream import UpstreamPool, error_from_response, retry_after_seconds
from batchyard.protocol.messages import MessageCreateRequest
from batchyard.routes import Route

WEATHER = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def request(**body: Any) -> MessageCreateRequest:
    full = {"model": "m", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}], **body}
    return MessageCreateRequest.model_validate(full)


def test_request_translation_covers_the_table() -> None:
    req = request(
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                {"type": "document", "title": "Doc", "source": {"type": "text", "media_type": "text/plain", "data": "body"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "cold", "is_error": True},
                {"type": "text", "text": "And now?"},
            ]},
        ],
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        stop_sequences=["END"],
        temperature=0.2,
        top_p=0.9,
        top_k=5,
        metadata={"user_id": "u-1"},
        thinking={"type": "enabled", "budget_tokens": 2048},
    )
    body = to_chat_completion(req, model="up", stream=True, reasoning="enable_thinking", extra_body={"seed": 7})
    assert body["model"] == "up" and body["max_tokens"] == 32
    assert body["messages"][0] == {"role": "system", "content": "Be brief.\n\nBe kind."}
    user = body["messages"][1]["content"]
    assert user[0] == {"type": "text", "text": "Look:"}
    assert user[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert user[2] == {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    assert user[3] == {"type": "text", "text": "Doc\n\nbody"}
    assert body["messages"][2] == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}],
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: cold"}
    assert body["messages"][4] == {"role": "user", "content": "And now?"}
    assert body["tools"] == [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["input_schema"], "description": "Weather"}}]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert body["stop"] == ["END"] and body["temperature"] == 0.2 and body["top_p"] == 0.9 and body["top_k"] == 5
    assert body["user"] == "u-1"
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["seed"] == 7


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, "auto"), ({"type": "none"}, "none"), ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}})],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    assert to_chat_completion(request(tools=[WEATHER], tool_choice=choice), model="m", stream=False)["tool_choice"] == expected


def test_dropped_and_refused() -> None:
    plain = to_chat_completion(request(top_k=3, thinking={"type": "enabled", "budget_tokens": 1024}), model="m", stream=False, top_k=False)
    assert "top_k" not in plain and "reasoning_effort" not in plain and "chat_template_kwargs" not in plain
    assert "stream" not in plain
    with pytest.raises(BackendError, match="server tool 'web_search_20250305'") as err:
        to_chat_completion(request(tools=[{"type": "web_search_20250305", "name": "web_search"}]), model="m", stream=False)
    assert err.value.status == 400 and not err.value.retryable
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}
    with pytest.raises(BackendError, match="'base64' source"):
        to_chat_completion(request(messages=[{"role": "user", "content": [pdf]}]), model="m", stream=False)


def completion(message: dict[str, Any], finish: str, **choice: Any) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 5}},
    }


def test_response_translation() -> None:
    msg = from_chat_completion(completion({"content": "Hello"}, "stop"), request(), model="m", tier="batch")
    assert msg["content"] == [{"type": "text", "text": "Hello", "citations": None}]
    assert msg["stop_reason"] == "end_turn" and msg["id"].startswith("msg_") and msg["model"] == "m"
    assert msg["usage"]["input_tokens"] == 15 and msg["usage"]["cache_read_input_tokens"] == 5
    assert msg["usage"]["output_tokens"] == 7 and msg["usage"]["service_tier"] == "batch"
    assert from_chat_completion(completion({"content": "x"}, "length"), request(), model="m", tier="batch")["stop_reason"] == "max_tokens"
    assert from_chat_completion(completion({"content": "x"}, "content_filter"), request(), model="m", tier="batch")["stop_reason"] == "refusal"
    vllm = from_chat_completion(completion({"content": "x"}, "stop", stop_reason="END"), request(stop_sequences=["END"]), model="m", tier="batch")
    assert (vllm["stop_reason"], vllm["stop_sequence"]) == ("stop_sequence", "END")
    sglang = from_chat_completion(completion({"content": "x"}, "stop", matched_stop="END"), request(stop_sequences=["END"]), model="m", tier="batch")
    assert sglang["stop_reason"] == "stop_sequence"
    called = from_chat_completion(
        completion({"content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}, "tool_calls"),
        request(),
        model="m",
        tier="standard",
    )
    assert called["stop_reason"] == "tool_use"
    assert called["content"] == [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}]
    odd_id = from_chat_completion(
        completion({"tool_calls": [{"id": "call 1!", "function": {"name": "t", "arguments": "{}"}}]}, "tool_calls"), request(), model="m", tier="batch"
    )
    assert odd_id["content"][0]["id"].startswith("toolu_")
    with pytest.raises(BackendError, match="not valid JSON") as err:
        from_chat_completion(completion({"tool_calls": [{"id": "c", "function": {"name": "t", "arguments": "{oops"}}]}, "tool_calls"), request(), model="m", tier="batch")
    assert err.value.error_type == "api_error"


def test_stream_translation_with_text_and_two_tool_calls() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Checking"}}]},
        {"choices": [{"index": 0, "delta": {"content": " now."}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "get_weather", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 9}},
    ]
    translator = StreamTranslator(request(tools=[WEATHER]), "m", "standard")
    events = [e for chunk in chunks for e in translator.feed(chunk)] + list(translator.finish())
    names = [e["type"] for e in events]
    assert names[0] == "message_start" and names[1] == "content_block_start" and names[2] == "ping"
    assert names[-2:] == ["message_delta", "message_stop"]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use", "tool_use"]
    assert [s["index"] for s in starts] == [0, 1, 2]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}
    json_pieces = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta" and e["index"] == 1]
    assert json_pieces[0] == "" and orjson.loads("".join(json_pieces)) == {"city": "Oslo"}
    assert sum(1 for e in events if e["type"] == "content_block_stop") == 3
    delta = events[-2]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["input_tokens"] == 11 and delta["usage"]["output_tokens"] == 9


def test_stream_with_bad_tool_json_fails_clearly() -> None:
    translator = StreamTranslator(request(), "m", "batch")
    list(translator.feed({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "t", "arguments": "{nope"}}]}}]}))
    with pytest.raises(BackendError, match="not valid JSON"):
        list(translator.finish())


def test_upstream_errors_keep_the_upstream_words() -> None:
    err = error_from_response(429, {"Retry-After": "7"}, {"error": {"message": "slow down", "type": "rate_limit_exceeded"}})
    assert (err.status, err.error_type, err.message, err.retryable, err.retry_after) == (429, "rate_limit_error", "slow down", True, 7.0)
    assert err.headers == {"retry-after": "7"}
    auth = error_from_response(401, {}, {"error": {"message": "Invalid API Key", "type": "authentication_error"}})
    assert (auth.error_type, auth.retryable) == ("authentication_error", False)
    bad = error_from_response(400, {}, {"error": {"message": "max_tokens too big"}})
    assert (bad.error_type, bad.message, bad.retryable) == ("invalid_request_error", "max_tokens too big", False)
    assert error_from_response(503, {}, None).retryable
    assert error_from_response(503, {}, None).message == "upstream returned HTTP 503"
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None


def test_pool_prefers_least_outstanding_and_benches_failing_upstreams(monkeypatch: pytest.MonkeyPatch) -> None:
    import batchyard.backends.upstream as upstream_module
    from batchyard.backends.upstream import HttpBackendOptions

    clock = [50.0]
    monkeypatch.setattr(upstream_module.time, "monotonic", lambda: clock[0])

    async def scenario() -> None:
        pool = UpstreamPool.open(HttpBackendOptions(base_url=["http://a/v1", "http://b/v1"]))
        a, b = pool.upstreams
        try:
            a.outstanding = 2
            assert pool.pick() is b
            a.outstanding = 0
            pool._failed(b)
            pool._failed(b)
            assert b.healthy(clock[0])  # two strikes: still in
            pool._failed(b)
            assert not b.healthy(clock[0]) and pool.pick() is a
            clock[0] += 0.5
            for _ in range(3):
                pool._failed(a)
            assert pool.pick() is b  # all benched: the one back soonest
            clock[0] += 0.51
            assert b.healthy(clock[0])
            pool._answered(b)
            assert b.failures == 0 and b.bench == 1.0
            with pytest.raises(BackendError):
                async with pool.use() as lease:
                    assert lease.base_url == "http://b/v1"
                    raise BackendError(400, "bad request")  # an answer, not a strike
            assert b.failures == 0 and b.outstanding == 0
        finally:
            await pool.close()

    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def fake_upstream(handler: Any) -> Any:
    """A real HTTP server on loopback whose every POST goes to ``handler(path, headers, body)``,
    which returns (status, headers, body bytes)."""
    async def endpoint(request: web.Request) -> web.StreamResponse:
        status, headers, body = handler(request.path, dict(request.headers), await request.read())
        return web.Response(status=status, headers=headers, body=body)

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", endpoint)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def gen(req: MessageCreateRequest, tier: str = "standard") -> GenerateRequest:
    return GenerateRequest(req, req.model_dump(exclude_none=True, by_alias=True), "2023-06-01", tier)  # type: ignore[arg-type]


def test_openai_backend_against_a_fake_upstream() -> None:
    seen: list[dict[str, Any]] = []

    def handler(path: str, headers: dict[str, str], raw_body: bytes) -> tuple[int, dict[str, str], bytes]:
        body = orjson.loads(raw_body)
        seen.append({"path": path, "auth": headers.get("Authorization"), "body": body})
        if body.get("stream"):
            frames = [
                {"choices": [{"index": 0, "delta": {"content": "Hi"}}]},
                {"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": "stop"}]},
                {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
            ]
            text = "".join(f"data: {orjson.dumps(f).decode()}\n\n" for f in frames) + "data: [DONE]\n\n"
            return 200, {"content-type": "text/event-stream"}, text.encode()
        if body["model"] == "broken":
            return 503, {"retry-after": "3", "content-type": "application/json"}, b'{"error": {"message": "warming up"}}'
        return 200, {"content-type": "application/json"}, orjson.dumps(completion({"content": "Hi there"}, "stop"))

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], BackendError]:
        async with fake_upstream(handler) as url:
            backend = OpenAIBackend(Route(id="x", backend="openai", options={"base_url": f"{url}/v1", "api_key": "sk-up", "model": "upstream-name"}))
            broken = OpenAIBackend(Route(id="y", backend="openai", options={"base_url": f"{url}/v1", "model": "broken"}))
            await backend.start()
            await broken.start()
            try:
                message = await backend.create(gen(request(), "batch"))
                events = [e async for e in backend.stream(gen(request()))]
                with pytest.raises(BackendError) as err:
                    await broken.create(gen(request()))
                return message, events, err.value
            finally:
                await backend.close()
                await broken.close()

    message, events, error = asyncio.run(scenario())
    assert seen[0]["path"] == "/v1/chat/completions" and seen[0]["auth"] == "Bearer sk-up"
    assert seen[0]["body"]["model"] == "upstream-name"
    assert message["model"] == "m" and message["usage"]["service_tier"] == "batch"
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "Hi there" and events[-2]["usage"]["output_tokens"] == 2
    assert (error.status, error.error_type, error.message, error.retryable, error.retry_after) == (
        503, "overloaded_error", "warming up", True, 3.0
    )
    assert seen[-1]["auth"] is None  # no key configured: no Authorization header sent


def test_unreachable_upstream_is_a_retryable_error() -> None:
    async def scenario() -> BackendError:
        from support.server import free_port

        backend = OpenAIBackend(Route(id="x", backend="openai", options={"base_url": f"http://127.0.0.1:{free_port()}/v1"}))
        await backend.start()
        try:
            with pytest.raises(BackendError) as err:
                await backend.create(gen(request()))
            return err.value
        finally:
            await backend.close()

    error = asyncio.run(scenario())
    assert error.status == 502 and error.retryable and error.error_type == "api_error"
    assert error.message.startswith("could not reach the upstream at http://127.0.0.1:")


def test_anthropic_backend_normalizes_what_comes_back() -> None:
    def handler(path: str, headers: dict[str, str], raw_body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert headers["x-api-key"] == "sk-up" and headers["anthropic-version"] == "2023-06-01"
        if path == "/v1/messages/count_tokens":
            return 404, {}, b'{"error": {"message": "no"}}'
        body = orjson.loads(raw_body)
        assert body["model"] == "upstream-name" and "stream" not in body
        answer = {
            "id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "upstream-name",
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": "END",
            "usage": {"input_tokens": 4, "output_tokens": 1},
        }
        return 200, {"content-type": "application/json"}, orjson.dumps(answer)

    async def scenario() -> tuple[dict[str, Any], int]:
        async with fake_upstream(handler) as url:
            backend = AnthropicBackend(Route(id="x", backend="anthropic", options={"base_url": url, "api_key": "sk-up", "model": "upstream-name"}))
            await backend.start()
            try:
                return await backend.create(gen(request(), "batch")), await backend.count_tokens(request())
            finally:
                await backend.close()

    message, counted = asyncio.run(scenario())
    assert message["id"].startswith("msg_") and message["model"] == "m"
    assert message["stop_reason"] == "stop_sequence"
    assert message["usage"]["service_tier"] == "batch" and message["usage"]["cache_read_input_tokens"] == 0
    assert counted > 0  # no count_tokens upstream: estimated locally
    assert normalize_message({"id": "msg_keep", "usage": {}}, None, "standard")["id"] == "msg_keep"
