"""`batchyard batch ...` against a real server: submit and wait, results to a file, bad
lines reported with their numbers, exit codes, JSON output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from support.helpers import simple_params


def batch_cli(server, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchyard", "batch", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "cli-key", **(env or {})},
    )


def write_jsonl(path: Path, items: list[object], raw_lines: dict[int, str] | None = None) -> Path:
    lines = [orjson.dumps(item).decode() for item in items]
    for index, text in (raw_lines or {}).items():
        lines.insert(index, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_submit_wait_results_to_a_file(server, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"c{i}", "params": simple_params(f"q {i}")} for i in range(25)])
    done = batch_cli(server, "submit", str(source), "--wait", "--poll", "0.2")
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.split()[1]
    assert batch_id.startswith("msgbatch_")
    assert "(25 requests)" in done.stdout and "ended" in done.stdout and "25 succeeded" in done.stdout

    out = tmp_path / "results.jsonl"
    saved = batch_cli(server, "results", batch_id, "-o", str(out))
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.strip() == f"25 results written to {out}"
    lines = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(f"c{i}" for i in range(25))
    assert not (tmp_path / "results.jsonl.part").exists()

    printed = batch_cli(server, "results", batch_id)
    assert printed.returncode == 0 and len(printed.stdout.splitlines()) == 25

    as_json = orjson.loads(batch_cli(server, "get", batch_id, "--json").stdout)
    assert as_json["id"] == batch_id and as_json["request_counts"]["succeeded"] == 25
    listed = batch_cli(server, "list", "--limit", "5", "--json")
    assert batch_id in [b["id"] for b in orjson.loads(listed.stdout)["data"]]
    human = batch_cli(server, "list", "--limit", "1000")
    assert batch_id in human.stdout

    deleted = batch_cli(server, "delete", batch_id)
    assert deleted.returncode == 0 and deleted.stdout.strip() == f"deleted {batch_id}"


def test_bad_lines_are_reported_with_their_numbers_and_nothing_is_sent(server, tmp_path: Path) -> None:
    items = [
        {"custom_id": "ok-1", "params": simple_params()},
        {"custom_id": "has space", "params": simple_params()},
        {"custom_id": "ok-1", "params": simple_params()},
        {"custom_id": "no-tokens", "params": {"model": "claude-sim", "messages": [{"role": "user", "content": "x"}]}},
        {"custom_id": "streaming", "params": {**simple_params(), "stream": True}},
        {"params": simple_params()},
    ]
    source = write_jsonl(tmp_path / "bad.jsonl", items, raw_lines={3: "{not json"})
    before = orjson.loads(batch_cli(server, "list", "--limit", "1000", "--json").stdout)["data"]
    done = batch_cli(server, "submit", str(source))
    assert done.returncode == 2
    errors = done.stderr.splitlines()
    assert errors == [
        f"{source}:2: custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
        f"{source}:3: custom_id 'ok-1' already used on line 1",
        f"{source}:4: not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        f"{source}:5: params: max_tokens: Field required",
        f'{source}:6: params: "stream=True" is not supported in the Message Batches API',
        f"{source}:7: custom_id: Field required",
    ]
    after = orjson.loads(batch_cli(server, "list", "--limit", "1000", "--json").stdout)["data"]
    assert len(after) == len(before)


def test_exit_codes(server, tmp_path: Path) -> None:
    missing = batch_cli(server, "get", "msgbatch_01" + "A" * 22)
    assert missing.returncode == 1
    assert "not_found_error: Message Batch msgbatch_01" in missing.stderr
    unusable = batch_cli(server, "submit", str(tmp_path / "absent.jsonl"))
    assert unusable.returncode == 2 and "does not exist" in unusable.stderr
    assert batch_cli(server, "list", "--limit", "0").returncode == 2
    assert batch_cli(server, "frobnicate").returncode == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert batch_cli(server, "submit", str(empty)).returncode == 2
    unreachable = batch_cli(server, "list", env={"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})
    assert unreachable.returncode == 1 and "cannot reach http://127.0.0.1:9" in unreachable.stderr


def test_cancel_and_watch(server, tmp_path: Path) -> None:
    # 50 lines at 300 ms, two at a time: 7.5 s of work, so the two CLI runs before the
    # cancel (each a fresh interpreter on a busy 2-core CI machine) cannot outrun it.
    source = write_jsonl(tmp_path / "slow.jsonl", [{"custom_id": f"s{i}", "params": simple_params(model="slow-model")} for i in range(50)])
    created = orjson.loads(batch_cli(server, "submit", str(source), "--json").stdout)
    not_yet = batch_cli(server, "results", created["id"])
    assert not_yet.returncode == 1 and "has not ended yet" in not_yet.stderr
    canceled = batch_cli(server, "cancel", created["id"], "--json")
    assert orjson.loads(canceled.stdout)["processing_status"] == "canceling"
    watched = batch_cli(server, "watch", created["id"], "--poll", "0.2", "--json")
    assert watched.returncode == 0
    final = orjson.loads(watched.stdout)
    assert final["processing_status"] == "ended" and final["request_counts"]["canceled"] >= 1


def openai_line(custom_id: str, url: str = "/v1/chat/completions", **body: object) -> dict[str, object]:
    content = {"model": "claude-sim", "messages": [{"role": "user", "content": f"about {custom_id}"}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": content}


def test_an_openai_batch_file_is_detected_submitted_and_its_results_saved(server, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "openai.jsonl", [openai_line(f"o{i}") for i in range(12)])
    done = batch_cli(server, "submit", str(source), "--wait", "--poll", "0.2")
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.split()[1]
    assert batch_id.startswith("batch_") and "(12 requests)" in done.stdout
    assert "completed" in done.stdout and "12 in all, 12 completed, 0 failed" in done.stdout

    out = tmp_path / "output.jsonl"
    saved = batch_cli(server, "results", batch_id, "-o", str(out))
    assert saved.returncode == 0, saved.stderr
    lines = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(f"o{i}" for i in range(12))
    assert all(line["response"]["body"]["object"] == "chat.completion" for line in lines)

    as_json = orjson.loads(batch_cli(server, "get", batch_id, "--json").stdout)
    assert as_json["object"] == "batch" and as_json["request_counts"] == {"total": 12, "completed": 12, "failed": 0}
    listed = batch_cli(server, "list", "--api", "openai", "--json")
    assert batch_id in [b["id"] for b in orjson.loads(listed.stdout)["data"]]
    assert batch_id not in batch_cli(server, "list", "--limit", "1000").stdout  # Message Batches only

    running = batch_cli(server, "submit", str(write_jsonl(tmp_path / "slow.jsonl", [
        {**openai_line(f"s{i}"), "body": {"model": "slow-model", "messages": [{"role": "user", "content": "x"}]}}
        for i in range(40)
    ])), "--json")
    slow_id = orjson.loads(running.stdout)["id"]
    cancelled = batch_cli(server, "cancel", slow_id, "--json")
    assert cancelled.returncode == 0 and orjson.loads(cancelled.stdout)["status"] in ("cancelling", "cancelled")


def test_bad_openai_lines_are_reported_before_anything_is_sent(server, tmp_path: Path) -> None:
    items = [openai_line("a"), openai_line("a"), {**openai_line("b"), "method": "GET"}, openai_line("c")]
    source = write_jsonl(tmp_path / "bad.jsonl", items)
    done = batch_cli(server, "submit", str(source), "--api", "openai")
    assert done.returncode == 2 and done.stdout == ""
    assert f"{source}:2: Line 2: the custom_id 'a' is also used on line 1" in done.stderr
    assert f"{source}:3: Line 3: 'method' must be 'POST'." in done.stderr
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [openai_line("a"), openai_line("b", url="/v1/embeddings", input="x")])
    done = batch_cli(server, "submit", str(mixed))
    assert done.returncode == 2 and "more than one endpoint" in done.stderr
