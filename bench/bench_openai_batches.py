"""OpenAI's Batch API against a real server process, next to the Message Batches API in the
same run on the same server.

A 50,000-line (~100 MB) input file of chat-completions lines: the upload and the create
call until the batch is ``in_progress`` (one timing, and each), the engine's pace on the
simulator at 0 ms (from create to every line done, polled every 50 ms), the time to write
the output file, the server's peak RSS, and the output download (MB/s). Then the same
requests as one Message Batch (create until ``ended``, polled the same way).

    .venv/bin/python bench/bench_openai_batches.py
    .venv/bin/python bench/bench_openai_batches.py --requests 50000 --line-bytes 2000 --database pg
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from support.server import ServerProcess  # noqa: E402

POLL = 0.05  # seconds between polls of a running batch

CONFIG = """
[batches]
max_bytes = 1073741824

[[models]]
id = "*"
backend = "simulator"
latency_ms = 0
"""


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def params(i: int, line_bytes: int) -> dict[str, object]:
    filler = "x" * max(0, line_bytes - 160)
    return {"model": "claude-sim", "max_tokens": 16, "messages": [{"role": "user", "content": f"Question {i} {filler}"}]}


def write_input(path: Path, count: int, line_bytes: int) -> int:
    with path.open("wb") as out:
        for i in range(count):
            line = {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": params(i, line_bytes)}
            out.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    return path.stat().st_size


def message_batch_body(count: int, line_bytes: int) -> bytes:
    parts = [json.dumps({"custom_id": f"req-{i}", "params": params(i, line_bytes)}, separators=(",", ":")) for i in range(count)]
    return ('{"requests":[' + ",".join(parts) + "]}").encode()


def openai_run(http: httpx.Client, source: Path, count: int, pid: int, poll: float) -> dict[str, object]:
    started = time.perf_counter()
    with source.open("rb") as handle:
        uploaded = http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("input.jsonl", handle, "application/jsonl")})
    uploaded.raise_for_status()
    upload_s = time.perf_counter() - started
    created_at = time.perf_counter()
    response = http.post(
        "/v1/batches",
        json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    response.raise_for_status()
    batch = response.json()
    in_progress_s = time.perf_counter() - started
    assert batch["status"] == "in_progress", batch
    lines_done = None
    while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(poll)
        batch = http.get(f"/v1/batches/{batch['id']}").json()
        counts = batch["request_counts"]
        if lines_done is None and counts["completed"] + counts["failed"] == count:
            lines_done = time.perf_counter() - created_at
    files_done = time.perf_counter() - created_at
    if lines_done is None:  # (ended between two polls)
        lines_done = files_done
    assert batch["request_counts"] == {"total": count, "completed": count, "failed": 0}, batch
    rss = peak_rss_mb(pid)
    started = time.perf_counter()
    size = lines = 0
    with http.stream("GET", f"/v1/files/{batch['output_file_id']}/content") as stream:
        for chunk in stream.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
    download_s = time.perf_counter() - started
    assert lines == count
    return {
        "api": "openai",
        "upload_s": round(upload_s, 2),
        "create_s": round(in_progress_s - upload_s, 2),
        "upload_and_create_s": round(in_progress_s, 2),
        "lines_done_after_s": round(lines_done, 2),
        "engine_req_per_s": round(count / lines_done),
        "output_written_after_s": round(files_done, 2),
        "output_mb": round(size / 1e6, 1),
        "output_mb_per_s": round(size / 1e6 / download_s, 1),
        "peak_rss_mb": round(rss),
    }


def message_batches_run(http: httpx.Client, count: int, line_bytes: int, pid: int, poll: float) -> dict[str, object]:
    payload = message_batch_body(count, line_bytes)
    headers = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
    started = time.perf_counter()
    response = http.post("/v1/messages/batches", content=payload, headers=headers)
    response.raise_for_status()
    create_s = time.perf_counter() - started
    batch = response.json()
    created_at = time.perf_counter()
    while batch["processing_status"] != "ended":
        time.sleep(poll)
        batch = http.get(f"/v1/messages/batches/{batch['id']}", headers=headers).json()
    done = time.perf_counter() - created_at
    assert batch["request_counts"]["succeeded"] == count, batch
    return {
        "api": "anthropic",
        "body_mb": round(len(payload) / 1e6, 1),
        "create_s": round(create_s, 2),
        "lines_done_after_s": round(done, 2),
        "engine_req_per_s": round(count / done),
        "peak_rss_mb": round(peak_rss_mb(pid)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--line-bytes", type=int, default=2000, help="approximate size of each input line")
    parser.add_argument("--database", default=None, help="sqlite (default) or pg")
    parser.add_argument("--poll", type=float, default=POLL, help="seconds between polls of a running batch")
    args = parser.parse_args()
    print(f"# cpus={os.cpu_count()} database={args.database or 'sqlite'} requests={args.requests}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        source = workdir / "input.jsonl"
        input_bytes = write_input(source, args.requests, args.line_bytes)
        print(f"# input file: {input_bytes / 1e6:.1f} MB", flush=True)
        temporary = args.database == "pg"
        database = create_postgres_database() if temporary else f"sqlite:///{workdir / 'bench.db'}"
        server = ServerProcess(database, config_text=CONFIG, workdir=workdir)
        server.start()
        try:
            assert server.proc is not None
            http = httpx.Client(base_url=server.url, headers={"authorization": "Bearer bench"}, timeout=600)
            # Warm up both paths first (imports, caches), so neither run pays for them.
            warm = workdir / "warm.jsonl"
            write_input(warm, 200, args.line_bytes)
            openai_run(http, warm, 200, server.proc.pid, args.poll)
            message_batches_run(http, 200, args.line_bytes, server.proc.pid, args.poll)
            openai_row = openai_run(http, source, args.requests, server.proc.pid, args.poll)
            print(json.dumps(openai_row), flush=True)
            anthropic_row = message_batches_run(http, args.requests, args.line_bytes, server.proc.pid, args.poll)
            print(json.dumps(anthropic_row), flush=True)
            ratio = openai_row["engine_req_per_s"] / anthropic_row["engine_req_per_s"]  # type: ignore[operator]
            print(json.dumps({"openai_over_message_batches": round(ratio, 2)}), flush=True)
        finally:
            server.stop()
            if temporary:
                drop_postgres_database(database)


if __name__ == "__main__":
    main()
