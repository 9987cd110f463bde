"""The openai and anthropic backends against a real third-party server: llama.cpp's own
HTTP server (xllamacpp) with SmolLM2-135M-Instruct. Small max_tokens, temperature 0;
assertions on shapes, stop reasons and usage, never on wording."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from support.databases import query
from support.helpers import make_client, raw, wait_for_end
from support.llama import LlamaUpstream
from support.server import ServerProcess

UPSTREAM_KEY = "sk-upstream-test"
BACKEND_KINDS = ["openai", "anthropic"]


def route(name: str, backend: str, base: str, **options: object) -> str:
    lines = [f'[[models]]\nid = "{name}"\nbackend = "{backend}"\nmodel = "smollm2"']
    url = f"{base}/v1" if backend == "openai" else base
    options = {"base_url": url, "api_key": UPSTREAM_KEY, "max_concurrency": 4, **options}
    for key, value in options.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, list):
            lines.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n\n"


@pytest.fixture(scope="module")
def upstream() -> Iterator[LlamaUpstream]:
    server = LlamaUpstream(api_key=UPSTREAM_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(upstream: LlamaUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("gateway")
    config = "[engine]\nretry_base = 0.05\n\n" + "".join(
        [
            route("smol-openai", "openai", upstream.url),
            route("smol-anthropic", "anthropic", upstream.url),
            route("smol-openai-badkey", "openai", upstream.url, api_key="sk-wrong", max_attempts=2),
            route("smol-anthropic-badkey", "anthropic", upstream.url, api_key="sk-wrong", max_attempts=2),
            route("smol-spread", "openai", upstream.url, base_url=["http://127.0.0.1:9/v1", f"{upstream.url}/v1"], max_attempts=6),
        ]
    )
    proc = ServerProcess(f"sqlite:///{workdir / 'gw.db'}", config_text=config, workdir=workdir)
    proc.start()
    yield proc
    proc.stop()


def classic(url: str) -> anthropic.Anthropic:
    """2023-06-01 allows temperature (2026-10-21 removed it); 0 keeps the model steady."""
    return make_client(url, default_headers={"anthropic-version": "2023-06-01"}, timeout=120)


TEMP0 = {"temperature": 0}  # the 2.x SDK has no temperature argument: it goes as an extra body field


def params(model: str, text: str = "Name a color.", **extra: object) -> dict[str, object]:
    """Arguments for an SDK call (add extra_body=TEMP0)."""
    return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": text}], **extra}


def line_params(model: str, text: str = "Name a color.", **extra: object) -> dict[str, object]:
    """A batch line's params."""
    return {**params(model, text, **extra), **TEMP0}


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_message_through_each_backend(gateway: ServerProcess, kind: str) -> None:
    client = classic(gateway.url)
    message = client.messages.create(**params(f"smol-{kind}"), extra_body=TEMP0)
    assert message.id.startswith("msg_") and message.model == f"smol-{kind}"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert 0 < message.usage.output_tokens <= 16
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) > 5
    assert message.usage.service_tier == "standard"
    capped = client.messages.create(**params(f"smol-{kind}", "Write a long story about the sea.", max_tokens=4), extra_body=TEMP0)
    assert capped.stop_reason == "max_tokens" and capped.usage.output_tokens == 4


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_streaming_through_each_backend(gateway: ServerProcess, kind: str) -> None:
    client = classic(gateway.url)
    with client.messages.stream(**params(f"smol-{kind}"), extra_body=TEMP0) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 2 and "".join(pieces) == final.content[0].text
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert 0 < final.usage.output_tokens <= 16
    same = client.messages.create(**params(f"smol-{kind}"), extra_body=TEMP0)
    assert same.content[0].text == final.content[0].text  # temperature 0: the same words either way


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_fifty_line_batch_through_each_backend(gateway: ServerProcess, kind: str) -> None:
    client = classic(gateway.url)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"{kind}-{i}", "params": line_params(f"smol-{kind}", f"Say the number {i}.")} for i in range(50)]
    )
    ended = wait_for_end(client, batch.id, timeout=300)
    assert ended.request_counts.succeeded == 50
    lines = list(client.messages.batches.results(batch.id))
    assert sorted(line.custom_id for line in lines) == sorted(f"{kind}-{i}" for i in range(50))
    for line in lines:
        message = line.result.message
        assert message.usage.service_tier == "batch" and 0 < message.usage.output_tokens <= 16
        assert message.stop_reason in ("end_turn", "max_tokens")


WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_tool_definitions_and_a_tool_turn_round_trip(gateway: ServerProcess, kind: str) -> None:
    """Tools, tool_choice and a tool_use/tool_result history all reach the upstream and come
    back as a well-formed Message (whether this small model then calls a tool is its affair)."""
    client = classic(gateway.url)
    conversation = [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "4 degrees and rain"}]},
    ]
    answer = client.messages.create(
        model=f"smol-{kind}", max_tokens=16, tools=[WEATHER], tool_choice={"type": "auto"}, messages=conversation,
        extra_body={"temperature": 0},
    )
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
    for block in answer.content:
        assert block.type in ("text", "tool_use")
        if block.type == "tool_use":
            assert block.name == "get_weather" and isinstance(block.input, dict)
    first = client.messages.create(
        **params(f"smol-{kind}", "Weather in Oslo?"), tools=[WEATHER], tool_choice={"type": "any"}, extra_body=TEMP0
    )
    assert first.stop_reason in ("end_turn", "max_tokens", "tool_use")


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_wrong_upstream_key_errors_lines_with_authentication_error(gateway: ServerProcess, kind: str) -> None:
    client = classic(gateway.url)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"k{i}", "params": line_params(f"smol-{kind}-badkey")} for i in range(3)]
    )
    ended = wait_for_end(client, batch.id, timeout=60)
    assert ended.request_counts.errored == 3
    for line in client.messages.batches.results(batch.id):
        assert line.result.type == "errored"
        assert line.result.error.error.type == "authentication_error"
        assert "sk-wrong" not in line.result.error.error.message  # keys never echoed
    with raw(gateway.url) as http:
        direct = http.post("/v1/messages", json=line_params(f"smol-{kind}-badkey"))
    assert direct.status_code == 401 and direct.json()["error"]["type"] == "authentication_error"


def test_a_dead_base_url_is_skipped(gateway: ServerProcess) -> None:
    client = classic(gateway.url)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"s{i}", "params": line_params("smol-spread", f"Number {i}")} for i in range(12)]
    )
    assert wait_for_end(client, batch.id, timeout=120).request_counts.succeeded == 12
    with raw(gateway.url) as http:
        metrics = http.get("/metrics").text
    assert 'batchyard_backend_calls_total{kind="batch",outcome="ok",route="smol-spread"} 12' in metrics
    failed = [
        float(row.split()[-1])
        for row in metrics.splitlines()
        if row.startswith('batchyard_backend_calls_total{kind="batch",outcome="api_error",route="smol-spread"}')
    ]
    # Three strikes bench the dead URL (one more may already be on its way), then single
    # probes after 1 s, 2 s, 4 s ...: only a handful of calls ever go to it.
    assert 3 <= sum(failed) <= 6, failed


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_upstream_stopped_mid_batch_retries_then_errors_nothing_lost(tmp_path: Path, kind: str) -> None:
    upstream = LlamaUpstream().start()
    config = "[engine]\nretry_base = 0.2\nretry_cap = 0.5\n\n" + route(
        "dying", kind, upstream.url, max_attempts=3, max_concurrency=2
    )
    gateway = ServerProcess(f"sqlite:///{tmp_path / 'dying.db'}", config_text=config, workdir=tmp_path)
    gateway.start()
    try:
        client = classic(gateway.url)
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"d{i}", "params": line_params("dying", f"Count to {i}.", max_tokens=24)} for i in range(30)]
        )
        deadline = time.monotonic() + 60
        while True:  # let a few lines through, then pull the plug
            done = query(gateway.database_url, "SELECT count(*) FROM batch_requests WHERE state = 2")[0][0]
            if done >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        upstream.stop()
        ended = wait_for_end(client, batch.id, timeout=120)
        counts = ended.request_counts
        assert counts.succeeded >= 3 and counts.errored >= 1
        assert counts.succeeded + counts.errored == 30
        lines = list(client.messages.batches.results(batch.id))
        assert len({line.custom_id for line in lines}) == 30
        errors = [line.result.error.error for line in lines if line.result.type == "errored"]
        assert all(e.type == "api_error" and "could not reach the upstream at http://127.0.0.1:" in e.message for e in errors)
        attempts = [row[0] for row in query(gateway.database_url, "SELECT attempts FROM batch_requests WHERE state = 3")]
        assert attempts and all(a == 3 for a in attempts)  # retried up to the route's limit first
    finally:
        gateway.stop()
        upstream.stop()


def test_llamacpp_streams_reach_the_sdk_whole(gateway: ServerProcess) -> None:
    """llama.cpp's server now and then sends a stream with no message_start; through the
    anthropic backend every stream must still end in a message the SDK can build."""
    client = classic(gateway.url)
    for i in range(24):
        with client.messages.stream(**params("smol-anthropic", f"Say something about the number {i}."), extra_body=TEMP0) as stream:
            message = stream.get_final_message()
        assert message.id.startswith("msg_")
        assert message.stop_reason in ("end_turn", "max_tokens")
        assert message.usage.output_tokens > 0


def test_a_misbehaving_upstream_stream_is_repaired(tmp_path: Path) -> None:
    from support.broken_stream_upstream import BrokenStreamUpstream

    upstream = BrokenStreamUpstream().start()
    config = f'[[models]]\nid = "broken"\nbackend = "anthropic"\nbase_url = "{upstream.url}"\nmax_attempts = 1\n'
    proc = ServerProcess(f"sqlite:///{tmp_path / 'b.db'}", config_text=config, workdir=tmp_path).start()
    try:
        client = make_client(proc.url)
        for fault in ("no-start", "no-block-start", "blocks-open", "no-stop", "duplicate-start", "valid"):
            with client.messages.stream(model="broken", max_tokens=16, messages=[{"role": "user", "content": fault}]) as stream:
                message = stream.get_final_message()
            assert [block.text for block in message.content] == ["Hello"], fault
            assert message.stop_reason == "end_turn", fault
            assert message.id.startswith("msg_"), fault
        with pytest.raises(anthropic.APIStatusError) as cut:
            with client.messages.stream(model="broken", max_tokens=16, messages=[{"role": "user", "content": "cut"}]) as stream:
                stream.get_final_message()
        assert "ended before its message did" in str(cut.value)
    finally:
        proc.stop()
        upstream.stop()
