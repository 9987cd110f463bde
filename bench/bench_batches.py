"""Batch benchmarks against a real server process.

For each size: time for the create call to return 200, the server's peak RSS, the time until
the batch is ``ended`` (requests/s, from the server's own created_at/ended_at), and the
download of the results file (MB/s).

    .venv/bin/python bench/bench_batches.py --requests 10000 100000
    .venv/bin/python bench/bench_batches.py --requests 100000 --param-bytes 1000
    .venv/bin/python bench/bench_batches.py --database pg --requests 100000 --param-bytes 1000
    .venv/bin/python bench/bench_batches.py --database pg --workers 2 --requests 50000
    .venv/bin/python bench/bench_batches.py --latency-ms 200 --max-concurrency 256 --concurrency 512 --requests 10000
    .venv/bin/python bench/bench_batches.py --src /tmp/old/src --requests 30000   # another checkout's code

Paired before/after on a machine whose speed drifts: run two at once, each on its own core,
and compare ``server_cpu_us_per_request`` (the server's CPU from the create to the end,
ingest included, per request) and ``steady_req_per_s`` (first to last result, SQLite):

    .venv/bin/python bench/bench_batches.py --requests 100000 --src /tmp/old/src & \
    .venv/bin/python bench/bench_batches.py --requests 100000; wait

``--database pg`` makes a temporary database on the local PostgreSQL (BATCHYARD_TEST_POSTGRES)
and drops it after. ``--workers N`` runs ``serve --no-engine`` plus N ``batchyard worker``
processes instead of one process with its own engine.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from support.server import ServerProcess  # noqa: E402

HEADERS = {"x-api-key": "bench", "anthropic-version": "2023-06-01", "content-type": "application/json"}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steady_rate(database: str, batch_id: str, count: int) -> float | None:
    """Requests ÷ (last finished_at − first finished_at) on SQLite: the engine's pace once
    it runs, without the ingest."""
    if not database.startswith("sqlite:///"):
        return None
    with sqlite3.connect(database.removeprefix("sqlite:///")) as db:
        first, last = db.execute(
            "SELECT min(finished_at), max(finished_at) FROM batch_requests WHERE batch_id = ?", (batch_id,)
        ).fetchone()
    return round(count / ((last - first) / 1e6)) if last > first else None


def body(count: int, param_bytes: int) -> bytes:
    filler = "x" * max(0, param_bytes - 110)
    parts = []
    for i in range(count):
        params = {
            "model": "claude-sim",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": f"Question {i} {filler}"}],
        }
        parts.append(json.dumps({"custom_id": f"req-{i}", "params": params}, separators=(",", ":")))
    return ('{"requests":[' + ",".join(parts) + "]}").encode()


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = f"""
[engine]
concurrency = {args.concurrency}

[[models]]
id = "*"
backend = "simulator"
latency_ms = {args.latency_ms}
max_concurrency = {args.max_concurrency}
"""
        temporary = args.database == "pg"
        database = create_postgres_database() if temporary else (args.database or f"sqlite:///{workdir / 'bench.db'}")
        extra = ["--no-engine"] if args.workers else []
        env = {"PYTHONPATH": args.src} if args.src else {}
        server = ServerProcess(database, config_text=config, workdir=workdir, extra_args=extra, env=env)
        workers = [
            ServerProcess(database, config_text=config, workdir=workdir, command="worker", env=env)
            for _ in range(args.workers)
        ]
        server.start()
        for worker in workers:
            worker.start()
        try:
            http = httpx.Client(base_url=server.url, headers=HEADERS, timeout=600)
            for count in args.requests:
                payload = body(count, args.param_bytes)
                cpu_before = cpu_seconds(server.proc.pid)
                started = time.perf_counter()
                response = http.post("/v1/messages/batches", content=payload)
                create_s = time.perf_counter() - started
                response.raise_for_status()
                batch = response.json()
                rss_after_create = peak_rss_mb(server.proc.pid)
                while batch["processing_status"] != "ended":
                    # (the figures come from the server's own timestamps: polling more often
                    # would only take CPU from the engine it measures)
                    time.sleep(0.5)
                    batch = http.get(f"/v1/messages/batches/{batch['id']}").json()
                wall_s = time.perf_counter() - started
                server_cpu_s = cpu_seconds(server.proc.pid) - cpu_before
                created = datetime.fromisoformat(batch["created_at"])
                ended = datetime.fromisoformat(batch["ended_at"])
                process_s = (ended - created).total_seconds()
                assert batch["request_counts"]["succeeded"] == count, batch["request_counts"]

                started = time.perf_counter()
                size = 0
                lines = 0
                with http.stream("GET", f"/v1/messages/batches/{batch['id']}/results") as stream:
                    for chunk in stream.iter_bytes():
                        size += len(chunk)
                        lines += chunk.count(b"\n")
                download_s = time.perf_counter() - started
                assert lines == count
                rows.append(
                    {
                        "workers": args.workers or "in-process",
                        "requests": count,
                        "body_mb": round(len(payload) / 1e6, 1),
                        "create_s": round(create_s, 2),
                        "ended_after_s": round(process_s, 2),
                        "engine_req_per_s": round(count / process_s) if process_s else None,
                        "steady_req_per_s": steady_rate(database, batch["id"], count),
                        "server_cpu_us_per_request": round(server_cpu_s / count * 1e6, 1),
                        "wall_s": round(wall_s, 2),
                        "results_mb": round(size / 1e6, 1),
                        "results_mb_per_s": round(size / 1e6 / download_s, 1),
                        "peak_rss_mb_after_create": round(rss_after_create),
                        "peak_rss_mb": round(peak_rss_mb(server.proc.pid)),
                        "ideal_req_per_s": round(args.max_concurrency / (args.latency_ms / 1000)) if args.latency_ms else None,
                    }
                )
                http.delete(f"/v1/messages/batches/{batch['id']}")
        finally:
            for worker in workers:
                worker.stop()
            server.stop()
            if temporary:
                drop_postgres_database(database)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--param-bytes", type=int, default=150, help="approximate size of each line's params")
    parser.add_argument("--database", default=None)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--concurrency", type=int, default=512, help="engine concurrency (the server default)")
    parser.add_argument("--max-concurrency", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="separate worker processes (0: engine in serve)")
    parser.add_argument("--src", default=None, help="run the server from this source tree (PYTHONPATH): before/after")
    args = parser.parse_args()
    print(f"# cpus={os.cpu_count()} database={args.database or 'sqlite'} latency_ms={args.latency_ms}", flush=True)
    for row in run(args):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
