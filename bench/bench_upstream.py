"""The openai backend against a fake OpenAI-compatible upstream with a fixed latency.

1. Batch throughput through batchyard ÷ a bare asyncio+httpx loop sending the same number
   of requests at the same concurrency straight to the upstream (target ≥ 0.9). The bare
   loop is measured twice: with one httpx client (slow past ~16 connections: its pool's
   bookkeeping grows with connections x waiters) and with clients of 8 connections each,
   the way batchyard holds them; the second is the fair baseline.
2. Added latency of POST /v1/messages through batchyard versus calling the upstream
   directly, one request at a time (p50, p99).

    .venv/bin/python bench/bench_upstream.py --latency-ms 50 --concurrency 64 --requests 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from fake_openai_upstream import start_upstream  # noqa: E402

from support.server import ServerProcess  # noqa: E402

HEADERS = {"x-api-key": "bench", "anthropic-version": "2023-06-01", "content-type": "application/json"}
PARAMS = {"model": "up", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}
OPENAI_BODY = {"model": "bench", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}


async def bare_loop(url: str, concurrency: int, total: int, per_client: int) -> float:
    """``concurrency`` workers sending ``total`` requests through httpx clients of
    ``per_client`` connections each (``per_client = concurrency``: one plain client)."""
    clients = [
        httpx.AsyncClient(
            base_url=url,
            limits=httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client),
            timeout=60,
        )
        for _ in range(-(-concurrency // per_client))
    ]
    remaining = total

    async def worker(n: int) -> None:
        nonlocal remaining
        client = clients[n % len(clients)]
        while remaining > 0:
            remaining -= 1
            response = await client.post("/v1/chat/completions", json=OPENAI_BODY)
            response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.aclose()
    return total / elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latencies(url: str, path: str, body: dict, headers: dict, runs: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for _ in range(runs):
            started = time.perf_counter()
            client.post(path, json=body).raise_for_status()
            out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--latency-runs", type=int, default=300)
    args = parser.parse_args()
    upstream, url = start_upstream(args.latency_ms)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = f"""
[[models]]
id = "up"
backend = "openai"
base_url = "{url}/v1"
model = "bench"
max_concurrency = {args.concurrency}
"""
            server = ServerProcess(f"sqlite:///{Path(tmp) / 'bench.db'}", config_text=config, workdir=Path(tmp))
            server.start()
            try:
                print(f"# cpus={os.cpu_count()} upstream latency {args.latency_ms} ms, concurrency {args.concurrency}", flush=True)
                plain = asyncio.run(bare_loop(url, args.concurrency, args.requests, args.concurrency))
                bare = asyncio.run(bare_loop(url, args.concurrency, args.requests, 8))
                http = httpx.Client(base_url=server.url, headers=HEADERS, timeout=600)
                body = {"requests": [{"custom_id": f"r{i}", "params": PARAMS} for i in range(args.requests)]}
                batch = http.post("/v1/messages/batches", json=body).json()
                while batch["processing_status"] != "ended":
                    time.sleep(0.05)
                    batch = http.get(f"/v1/messages/batches/{batch['id']}").json()
                assert batch["request_counts"]["succeeded"] == args.requests, batch["request_counts"]
                seconds = (datetime.fromisoformat(batch["ended_at"]) - datetime.fromisoformat(batch["created_at"])).total_seconds()
                through = args.requests / seconds
                print(json.dumps({
                    "requests": args.requests,
                    "bare_httpx_one_client_req_per_s": round(plain),
                    "bare_httpx_lanes_of_8_req_per_s": round(bare),
                    "batchyard_req_per_s": round(through),
                    "ratio_to_bare_lanes": round(through / bare, 3),
                    "ratio_to_bare_one_client": round(through / plain, 3),
                    "ideal_req_per_s": round(args.concurrency / (args.latency_ms / 1000)),
                }), flush=True)
                direct = latencies(url, "/v1/chat/completions", OPENAI_BODY, {}, args.latency_runs)
                proxied = latencies(server.url, "/v1/messages", PARAMS, HEADERS, args.latency_runs)
                print(json.dumps({
                    "direct_p50_ms": round(percentile(direct, 0.5) * 1000, 2),
                    "direct_p99_ms": round(percentile(direct, 0.99) * 1000, 2),
                    "batchyard_p50_ms": round(percentile(proxied, 0.5) * 1000, 2),
                    "batchyard_p99_ms": round(percentile(proxied, 0.99) * 1000, 2),
                    "added_p50_ms": round((percentile(proxied, 0.5) - percentile(direct, 0.5)) * 1000, 2),
                    "added_p99_ms": round((percentile(proxied, 0.99) - percentile(direct, 0.99)) * 1000, 2),
                }), flush=True)
            finally:
                server.stop()
    finally:
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()
