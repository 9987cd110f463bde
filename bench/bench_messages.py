"""Interactive /v1/messages against a real server (simulator, 0 ms): requests/s and latency
percentiles at several client concurrencies, and time to first byte of a stream.

    .venv/bin/python bench/bench_messages.py --concurrency 1 16 64 --seconds 10

The load comes from wrk (Debian package ``wrk``) when it is installed, else from an httpx
client in this process (much slower: it measures httpx as much as the server). Either way
the client shares the machine with the server: on a 2-core box the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.server import ServerProcess  # noqa: E402

HEADERS = {"x-api-key": "bench", "anthropic-version": "2023-06-01", "content-type": "application/json"}
BODY = json.dumps(
    {"model": "claude-sim", "max_tokens": 64, "messages": [{"role": "user", "content": "Tell me about rivers"}]}
).encode()
STREAM_BODY = json.dumps(
    {"model": "claude-sim", "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "Rivers?"}]}
).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(url: str, concurrency: int, seconds: float) -> dict[str, object]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.post("/v1/messages", content=BODY)
                if response.status_code != 200:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = "bench"
wrk.headers["anthropic-version"] = "2023-06-01"
"""


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def load_with_wrk(url: str, concurrency: int, seconds: float, workdir: Path) -> dict[str, object]:
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT % BODY.decode())
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency", "-s", str(script), f"{url}/v1/messages"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": int(errors.group(1)) if errors else 0,
        "req_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))),
        "p50_ms": round(_ms(re.search(r"^\s+50%\s+(\S+)$", out, re.M).group(1)), 2),
        "p99_ms": round(_ms(re.search(r"^\s+99%\s+(\S+)$", out, re.M).group(1)), 2),
        "client": "wrk",
    }


async def stream_ttfb(url: str, runs: int) -> dict[str, object]:
    firsts: list[float] = []
    totals: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=30) as client:
        for _ in range(runs):
            started = time.perf_counter()
            async with client.stream("POST", "/v1/messages", content=STREAM_BODY) as response:
                first = None
                async for _chunk in response.aiter_raw():
                    if first is None:
                        first = time.perf_counter() - started
                firsts.append(first or 0.0)
                totals.append(time.perf_counter() - started)
    return {
        "stream_runs": runs,
        "ttfb_p50_ms": round(statistics.median(firsts) * 1000, 2),
        "ttfb_p99_ms": round(percentile(firsts, 0.99) * 1000, 2),
        "stream_total_p50_ms": round(statistics.median(totals) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--stream-runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(f"sqlite:///{Path(tmp) / 'bench.db'}", workdir=Path(tmp))
        server.start()
        try:
            print(f"# cpus={os.cpu_count()} simulator latency 0 ms; client in the same machine", flush=True)
            asyncio.run(load(server.url, 4, 1.0))  # warm up
            for concurrency in args.concurrency:
                if shutil.which("wrk"):
                    row = load_with_wrk(server.url, concurrency, args.seconds, Path(tmp))
                else:
                    row = {**asyncio.run(load(server.url, concurrency, args.seconds)), "client": "httpx"}
                print(json.dumps(row), flush=True)
            print(json.dumps(asyncio.run(stream_ttfb(server.url, args.stream_runs))), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
