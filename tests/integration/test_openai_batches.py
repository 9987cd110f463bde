"""OpenAI's Batch API with the `openai` SDK unchanged (strict response validation), on the
one engine, on both databases: the quick start, lines failing by design, a bad input file,
cancel mid-batch, create errors, paging, workspaces, and faults (kill -9 mid-batch, a
crash between a batch's end and its files)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest

from support.databases import create_postgres_database, drop_postgres_database, query
from support.helpers import KILL_CONFIG, make_client, make_key, wait_until
from support.llama import LlamaUpstream
from support.server import ServerProcess

TERMINAL = ("completed", "failed", "expired", "cancelled")


def oai(url: str, api_key: str = "any") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=120, _strict_response_validation=True)


def chat_line(custom_id: str, model: str = "claude-sim", text: str = "Hello", url: str = "/v1/chat/completions") -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 32}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def upload(client: openai.OpenAI, lines: list[dict[str, Any]] | list[bytes]) -> str:
    data = b"\n".join(line if isinstance(line, bytes) else orjson.dumps(line) for line in lines) + b"\n"
    return client.files.create(file=("input.jsonl", data), purpose="batch").id


def submit(client: openai.OpenAI, lines: list[dict[str, Any]], endpoint: str = "/v1/chat/completions", **extra: Any) -> Any:
    return client.batches.create(
        input_file_id=upload(client, lines), endpoint=endpoint, completion_window="24h", **extra  # type: ignore[arg-type]
    )


def wait_done(client: openai.OpenAI, batch_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}"
        time.sleep(0.05)


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines()]


def one_line_each(client: openai.OpenAI, batch: Any, custom_ids: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The output and error lines by custom id, checking every input line has exactly one."""
    output = file_lines(client, batch.output_file_id)
    errors = file_lines(client, batch.error_file_id)
    seen = [line["custom_id"] for line in output + errors]
    assert sorted(seen) == sorted(custom_ids)  # one line per request, none twice
    ids = [line["id"] for line in output + errors]
    assert len(set(ids)) == len(ids) and all(i.startswith("batch_req_") for i in ids)
    assert batch.request_counts.total == len(custom_ids)
    assert (batch.request_counts.completed, batch.request_counts.failed) == (len(output), len(errors))
    return {line["custom_id"]: line for line in output}, {line["custom_id"]: line for line in errors}


# -- on the main test server (both databases) ---------------------------------------------


def test_the_quick_start_upload_create_poll_download(server: ServerProcess) -> None:
    client = oai(server.url)
    lines = [chat_line(f"q{i}", model="slow-model", text=f"Question {i}") for i in range(16)]
    batch = submit(client, lines, metadata={"job": "nightly"}, output_expires_after={"anchor": "created_at", "seconds": 7200})
    assert batch.id.startswith("batch_") and batch.object == "batch"
    assert (batch.status, batch.endpoint, batch.model, batch.metadata) == ("in_progress", "/v1/chat/completions", "slow-model", {"job": "nightly"})
    assert batch.request_counts.total == 16 and batch.output_file_id is None and batch.in_progress_at is not None

    # The counts move while it runs (two at a time, 300 ms each), unlike Message Batches'.
    seen: set[int] = set()

    def counted() -> bool:
        now = client.batches.retrieve(batch.id)
        if now.status == "in_progress":
            seen.add(now.request_counts.completed)
        return now.status in TERMINAL

    wait_until(counted, timeout=120, what="the batch to end")
    assert any(0 < n < 16 for n in seen), seen
    done = wait_done(client, batch.id)
    assert done.status == "completed" and done.error_file_id is None
    assert done.completed_at is not None and done.finalizing_at is not None and done.failed_at is None
    output, errors = one_line_each(client, done, [f"q{i}" for i in range(16)])
    assert errors == {}
    usage = {"input": 0, "output": 0}
    for line in output.values():
        assert line["error"] is None and line["response"]["status_code"] == 200
        assert line["response"]["request_id"].startswith("req_")
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "slow-model"
        assert body["choices"][0]["message"]["role"] == "assistant" and body["choices"][0]["message"]["content"]
        usage["input"] += body["usage"]["prompt_tokens"]
        usage["output"] += body["usage"]["completion_tokens"]
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens) == (usage["input"], usage["output"])
    assert done.usage.total_tokens == usage["input"] + usage["output"]
    output_file = client.files.retrieve(done.output_file_id)
    assert output_file.purpose == "batch_output" and output_file.filename == f"{done.id}_output.jsonl"
    assert output_file.expires_at == output_file.created_at + 7200


def test_500_lines_some_failing_by_design(server: ServerProcess) -> None:
    client = oai(server.url)

    def line(i: int) -> dict[str, Any]:
        if i % 10 == 3:
            return chat_line(f"l{i}", model="broken-model")  # the backend fails: overloaded
        if i % 10 == 7:
            return chat_line(f"l{i}", url="/v1/embeddings")  # not the batch's endpoint
        if i % 25 == 0:
            return chat_line(f"l{i}", model="no-such-model")
        return chat_line(f"l{i}", text=f"line {i}")

    long_id = "L" * 300  # longer than Message Batches allow; OpenAI's may be
    batch = submit(client, [*(line(i) for i in range(499)), chat_line(long_id)])
    done = wait_done(client, batch.id)
    assert done.status == "completed"
    output, errors = one_line_each(client, done, [*(f"l{i}" for i in range(499)), long_id])
    assert output[long_id]["response"]["status_code"] == 200
    for i in range(499):
        key = f"l{i}"
        if i % 10 == 3:
            response = errors[key]["response"]
            assert response["status_code"] == 529 and response["body"]["error"]["type"] == "overloaded_error"
        elif i % 10 == 7:
            response = errors[key]["response"]
            assert response["status_code"] == 400
            assert "is not the batch's endpoint '/v1/chat/completions'" in response["body"]["error"]["message"]
        elif i % 25 == 0:
            response = errors[key]["response"]
            assert response["status_code"] == 404 and "no-such-model" in response["body"]["error"]["message"]
        else:
            assert output[key]["response"]["status_code"] == 200
    assert len(errors) == 50 + 50 + 20  # (a multiple of 25 never ends in 3 or 7)


def test_an_input_file_with_bad_lines_fails_naming_them(server: ServerProcess) -> None:
    client = oai(server.url)
    lines: list[dict[str, Any]] = [
        chat_line("a"),
        chat_line("b"),
        chat_line("a"),  # line 3: a duplicate custom_id
        chat_line("c"),
        {**chat_line("d"), "method": "GET"},  # line 5
        {"custom_id": "e", "method": "POST", "url": "/v1/chat/completions"},  # line 6: no body
        chat_line("f\u0000g"),  # line 7: a NUL no database column takes
    ]
    batch = submit(client, lines)
    assert batch.status == "failed" and batch.failed_at is not None and batch.in_progress_at is None
    assert batch.errors is not None and batch.errors.object == "list"
    found = [(e.line, e.code, e.param) for e in batch.errors.data or []]
    assert found == [
        (3, "duplicate_custom_id", "custom_id"),
        (5, "invalid_value", "method"),
        (6, "missing_required_parameter", "body"),
        (7, "invalid_value", "custom_id"),
    ]
    assert "also used on line 1" in (batch.errors.data or [])[0].message
    again = client.batches.retrieve(batch.id)
    assert again.status == "failed" and again.request_counts.total == 0
    assert (again.output_file_id, again.error_file_id) == (None, None)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_cancel_mid_batch(server: ServerProcess) -> None:
    client = oai(server.url)
    ids = [f"c{i}" for i in range(40)]
    batch = submit(client, [chat_line(i, model="slow-model") for i in ids])
    wait_until(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 2, timeout=60, what="two lines done")
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at is not None
    done = wait_done(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None and done.completed_at is None
    output, errors = one_line_each(client, done, ids)
    assert 2 <= len(output) < 40
    cancelled = [line for line in errors.values() if line["error"] is not None]
    assert cancelled and all(
        line["response"] is None and line["error"]["code"] == "batch_cancelled" for line in cancelled
    )
    assert client.batches.cancel(batch.id).status == "cancelled"  # idempotent once cancelled


def test_create_errors_in_openais_words(server: ServerProcess) -> None:
    client = oai(server.url)
    good = upload(client, [chat_line("x")])

    def create(**body: Any) -> Any:
        return client.post("/batches", body=body, cast_to=openai.types.Batch)

    cases: list[tuple[dict[str, Any], type[Exception], str | None, str]] = [
        ({"endpoint": "/v1/chat/completions", "completion_window": "24h"}, openai.BadRequestError, "input_file_id", "Missing required parameter"),
        ({"input_file_id": good, "endpoint": "/v1/responses", "completion_window": "24h"}, openai.BadRequestError, "endpoint", "is not supported by this server"),
        ({"input_file_id": good, "endpoint": "/v1/chat/completions", "completion_window": "1h"}, openai.BadRequestError, "completion_window", "Supported values are: '24h'"),
        ({"input_file_id": good, "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {f"k{i}": "v" for i in range(17)}}, openai.BadRequestError, "metadata", "at most 16"),
        ({"input_file_id": good, "endpoint": "/v1/chat/completions", "completion_window": "24h", "output_expires_after": {"anchor": "created_at", "seconds": 60}}, openai.BadRequestError, "output_expires_after.seconds", "between 3600 and 2592000"),
        ({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}, openai.NotFoundError, "input_file_id", "No such File object: file-nope"),
    ]
    for body, error, param, words in cases:
        with pytest.raises(error) as caught:
            create(**body)
        assert caught.value.body["param"] == param and words in caught.value.body["message"], caught.value.body  # type: ignore[index]
    user_file = client.files.create(file=("notes.jsonl", orjson.dumps(chat_line("y"))), purpose="user_data")
    with pytest.raises(openai.BadRequestError, match="must be uploaded with purpose 'batch'"):
        create(input_file_id=user_file.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError, match="No such Batch object"):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.BadRequestError, match="between 1 and 100"):
        client.batches.list(limit=101)


def test_listing_pages_and_the_two_batch_apis_stay_apart(server: ServerProcess) -> None:
    client = oai(server.url)
    made = [submit(client, [chat_line("p")]).id for _ in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
    rest = client.batches.list(limit=2, after=first.data[-1].id)
    assert rest.data[0].id == made[0]
    everything = [b.id for b in client.batches.list(limit=2)]  # iterating a page follows every next page
    assert set(made) <= set(everything)
    # An OpenAI batch is not a Message Batch, and the other way round.
    claude = make_client(server.url)
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.batches.retrieve(made[0])
    message_batch = claude.messages.batches.create(
        requests=[{"custom_id": "m", "params": {"model": "claude-sim", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}}]
    )
    assert message_batch.id not in everything
    assert all(b.id.startswith("msgbatch_") for b in claude.messages.batches.list(limit=100).data)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(message_batch.id)


def test_messages_lines_and_endpoints_a_route_cannot_serve(server: ServerProcess) -> None:
    client = oai(server.url)
    body = {"model": "claude-sim", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}
    lines = [{"custom_id": "m1", "method": "POST", "url": "/v1/messages", "body": body}]
    done = wait_done(client, submit(client, lines, endpoint="/v1/messages").id)
    output, _ = one_line_each(client, done, ["m1"])
    message = output["m1"]["response"]["body"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["content"][0]["type"] == "text"
    assert done.usage is not None and done.usage.input_tokens == message["usage"]["input_tokens"]

    embed = [{"custom_id": "e1", "method": "POST", "url": "/v1/embeddings", "body": {"model": "claude-sim", "input": "tea"}}]
    done = wait_done(client, submit(client, embed, endpoint="/v1/embeddings").id)
    _, errors = one_line_each(client, done, ["e1"])
    error = errors["e1"]["response"]["body"]["error"]
    assert errors["e1"]["response"]["status_code"] == 400
    assert "simulator backend, which cannot serve /v1/embeddings" in error["message"]


def test_the_files_and_batches_of_a_workspace_are_its_own(tmp_path: Path, fresh_database_url: str) -> None:
    keys = {name: make_key(name, fresh_database_url, tmp_path) for name in ("alpha", "beta")}
    config = (
        '[rate_limits]\nmax_queued_requests = 3\n\n[[models]]\nid = "slow"\nbackend = "simulator"\nlatency_ms = 3000\n\n'
        '[[models]]\nid = "*"\nbackend = "simulator"\n'
    )
    proc = ServerProcess(fresh_database_url, config_text=config, workdir=tmp_path)
    proc.start()
    try:
        alpha, beta = oai(proc.url, keys["alpha"]), oai(proc.url, keys["beta"])
        done = wait_done(alpha, submit(alpha, [chat_line("w")]).id)
        assert done.status == "completed"
        with pytest.raises(openai.NotFoundError):
            beta.batches.retrieve(done.id)
        with pytest.raises(openai.NotFoundError):
            beta.files.content(done.output_file_id)  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError):  # another workspace's file is no input
            beta.batches.create(input_file_id=done.input_file_id, endpoint="/v1/chat/completions", completion_window="24h")
        assert done.id not in [b.id for b in beta.batches.list().data]
        with pytest.raises(openai.AuthenticationError):
            oai(proc.url, "sk-wrong").batches.list()

        # The cap on a workspace's queued requests counts both kinds of batch.
        queued = submit(alpha, [chat_line(f"s{i}", model="slow") for i in range(2)])
        with pytest.raises(openai.RateLimitError, match="over its limit of 3"):
            submit(alpha, [chat_line(f"t{i}") for i in range(2)])
        claude = make_client(proc.url, api_key=keys["alpha"])
        with pytest.raises(anthropic.RateLimitError):
            claude.messages.batches.create(
                requests=[{"custom_id": f"u{i}", "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}} for i in range(2)]
            )
        assert submit(beta, [chat_line("v0"), chat_line("v1")]).status == "in_progress"  # beta's queue is its own
        alpha.batches.cancel(queued.id)
    finally:
        proc.stop()


def test_output_files_are_written_past_the_storage_quota(tmp_path: Path) -> None:
    keys = {"alpha": make_key("alpha", f"sqlite:///{tmp_path / 'quota.db'}", tmp_path)}
    config = '[files]\nmax_workspace_bytes = 2000\n\n[[models]]\nid = "*"\nbackend = "simulator"\n'
    proc = ServerProcess(f"sqlite:///{tmp_path / 'quota.db'}", config_text=config, workdir=tmp_path)
    proc.start()
    try:
        client = oai(proc.url, keys["alpha"])
        ids = [f"q{i}" for i in range(5)]
        done = wait_done(client, submit(client, [chat_line(i) for i in ids]).id)  # ~1 KB of input
        assert done.status == "completed"
        one_line_each(client, done, ids)
        assert client.files.retrieve(done.output_file_id).bytes > 2000  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError, match="storage quota"):  # it counts for later uploads
            upload(client, [chat_line("late")])
    finally:
        proc.stop()


def test_a_batch_past_its_window_expires_keeping_what_finished(tmp_path: Path) -> None:
    config = (
        "[batches]\nttl = 2\n\n[engine]\nsweep_interval = 0.2\n\n"
        '[[models]]\nid = "slow"\nbackend = "simulator"\nlatency_ms = 300\nmax_concurrency = 1\n'
    )
    proc = ServerProcess(f"sqlite:///{tmp_path / 'expiry.db'}", config_text=config, workdir=tmp_path)
    proc.start()
    try:
        client = oai(proc.url)
        ids = [f"x{i}" for i in range(30)]
        done = wait_done(client, submit(client, [chat_line(i, model="slow") for i in ids]).id)
        assert done.status == "expired" and done.expired_at is not None and done.completed_at is None
        output, errors = one_line_each(client, done, ids)
        assert 1 <= len(output) < 30
        assert all(line["response"] is None and line["error"]["code"] == "batch_expired" for line in errors.values())
    finally:
        proc.stop()


# -- faults ---------------------------------------------------------------------------



def assert_exactly_once(url: str, database_url: str, batch_id: str, custom_ids: list[str]) -> None:
    client = oai(url)
    done = wait_done(client, batch_id)
    assert done.status == "completed"
    output, errors = one_line_each(client, done, custom_ids)
    assert errors == {} and len(output) == len(custom_ids)
    files = query(database_url, "SELECT count(*) FROM files WHERE purpose = 'batch_output' AND filename LIKE $1", f"{batch_id}%")
    assert files == [(1,)]  # one output file, however often the work was interrupted


def test_kill_9_the_server_mid_batch(tmp_path: Path, fresh_database_url: str) -> None:
    proc = ServerProcess(fresh_database_url, config_text=KILL_CONFIG, workdir=tmp_path)
    proc.start()
    client = oai(proc.url)
    ids = [f"k{i}" for i in range(1000)]
    batch = submit(client, [chat_line(i, text=f"kill {i}") for i in ids])
    for pause in (0.3, 0.6, 0.4, 0.5, 0.7):
        time.sleep(pause)
        proc.kill()
        proc.start()
    try:
        assert_exactly_once(proc.url, fresh_database_url, batch.id, ids)
    finally:
        proc.stop()


def test_kill_9_one_of_two_postgres_workers(tmp_path: Path) -> None:
    url = create_postgres_database()
    api = ServerProcess(url, config_text=KILL_CONFIG, workdir=tmp_path, extra_args=["--no-engine"])
    workers = [ServerProcess(url, config_text=KILL_CONFIG, workdir=tmp_path, command="worker") for _ in range(2)]
    try:
        api.start()
        for worker in workers:
            worker.start()
        client = oai(api.url)
        ids = [f"w{i}" for i in range(1000)]
        batch = submit(client, [chat_line(i, text=f"worker {i}") for i in ids])
        for pause in (0.4, 0.8, 0.5):
            time.sleep(pause)
            workers[0].kill()
            workers[0].start()
        assert_exactly_once(api.url, url, batch.id, ids)
        assert workers[1].proc is not None and workers[1].proc.poll() is None
    finally:
        for proc in [*workers, api]:
            proc.stop()
        drop_postgres_database(url)


def test_a_crash_between_the_end_and_the_files_is_finished_after_restart(tmp_path: Path, fresh_database_url: str) -> None:
    proc = ServerProcess(fresh_database_url, config_text=KILL_CONFIG, workdir=tmp_path)
    proc.start()
    try:
        client = oai(proc.url)
        ids = [f"f{i}" for i in range(30)]
        done = wait_done(client, submit(client, [chat_line(i) for i in ids]).id)
        proc.kill()
        # The state a kill -9 leaves when it lands after the last line's result (which ends
        # the batch) and after its output file was written, before the file was recorded:
        # ended, no files recorded, an output file nobody names.
        query(
            fresh_database_url,
            "UPDATE batches SET finalized_at = NULL, output_file_id = NULL, details = NULL WHERE id = $1",
            done.id,
        )
        proc.start()
        assert client.batches.retrieve(done.id).status in ("finalizing", "completed")
        assert_exactly_once(proc.url, fresh_database_url, done.id, ids)  # one output file: the leftover went
        again = client.batches.retrieve(done.id)
        assert again.output_file_id != done.output_file_id
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(done.output_file_id)  # type: ignore[arg-type]
    finally:
        proc.stop()


# -- a real upstream: llama.cpp's server (xllamacpp) --------------------------------------


def test_embeddings_and_completions_batches_through_llama_cpp(tmp_path: Path) -> None:
    upstream = LlamaUpstream(embeddings=True).start()
    config = f'[[models]]\nid = "smol"\nbackend = "openai"\nmodel = "smollm2"\nbase_url = "{upstream.url}/v1"\nmax_concurrency = 4\n'
    proc = ServerProcess(f"sqlite:///{tmp_path / 'llama.db'}", config_text=config, workdir=tmp_path)
    try:
        proc.start()
        client = oai(proc.url)
        texts = ["green tea", "black coffee", "a cup of tea", "sparkling water", "the moon"]
        lines = [
            {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": "smol", "input": text}}
            for i, text in enumerate(texts)
        ]
        done = wait_done(client, submit(client, lines, endpoint="/v1/embeddings").id)
        assert done.status == "completed"
        output, _ = one_line_each(client, done, [f"e{i}" for i in range(len(texts))])
        vectors = []
        for i in range(len(texts)):
            body = output[f"e{i}"]["response"]["body"]
            assert body["object"] == "list" and body["model"] == "smol"
            vectors.append(body["data"][0]["embedding"])
        assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) > 100
        assert vectors[0] != vectors[1]
        assert done.usage is not None and done.usage.input_tokens == sum(
            output[f"e{i}"]["response"]["body"]["usage"]["prompt_tokens"] for i in range(len(texts))
        )

        prompts = [
            {"custom_id": f"p{i}", "method": "POST", "url": "/v1/completions",
             "body": {"model": "smol", "prompt": f"Count to {i + 2}:", "max_tokens": 8, "temperature": 0}}
            for i in range(3)
        ]
        done = wait_done(client, submit(client, prompts, endpoint="/v1/completions").id)
        output, _ = one_line_each(client, done, ["p0", "p1", "p2"])
        for line in output.values():
            choice = line["response"]["body"]["choices"][0]
            assert isinstance(choice["text"], str) and choice["finish_reason"] in ("length", "stop")
    finally:
        proc.stop()
        upstream.stop()
