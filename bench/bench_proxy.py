"""CPU per proxied call: ``POST /v1/messages`` (JSON and SSE) through an ``openai`` route to
a fake OpenAI-compatible upstream, driven by wrk (apt-get install wrk).

For each upstream latency (0 ms and 50 ms), connection count (1 and 64) and answer kind,
wrk runs for ``--seconds``; the figures are the server's req/s and its CPU per call (user +
system seconds of the server process and its children — the ``--workers`` processes —
divided by the calls wrk completed). With ``--src`` the same run is made first with
another checkout's code (PYTHONPATH), for before/after in one sitting. At 50 ms × 64
connections the ideal is 64 / 0.05 = 1,280 req/s.

    .venv/bin/python bench/bench_proxy.py
    .venv/bin/python bench/bench_proxy.py --workers 1 2 --seconds 10
    .venv/bin/python bench/bench_proxy.py --src /tmp/before/src      # before (other tree) and after
    .venv/bin/python bench/bench_proxy.py --direct                    # and the upstream without batchyard

``--direct`` adds, for the 50 ms upstream, what its ceiling is without batchyard in front:
wrk straight at it, and a bare aiohttp loop (batchyard's upstream client, one session,
the same connections) straight at it: the most a proxy built on that client could reach
on this machine, whatever it did itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from fake_openai_upstream import start_upstream  # noqa: E402

from support.server import ServerProcess  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PARAMS = {"model": "up{latency}", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}
LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["content-type"] = "application/json"
wrk.headers["x-api-key"] = "bench"
wrk.headers["anthropic-version"] = "2023-06-01"
"""


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (live ones)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(c) for c in children)
        except (OSError, IndexError):
            continue
    return total


def wrk(url: str, script: Path, connections: int, seconds: float) -> tuple[int, float, int]:
    """(requests completed, req/s, non-2xx answers)."""
    done = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = done.stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return requests, rate, int(bad.group(1)) if bad else 0


def run(label: str, src: str | None, workers: int, upstreams: dict[int, str], args: argparse.Namespace) -> list[dict]:  # type: ignore[type-arg]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = "".join(
            f'[[models]]\nid = "up{latency}"\nbackend = "openai"\nbase_url = "{url}/v1"\nmodel = "bench"\n\n'
            for latency, url in upstreams.items()
        )
        env = {"PYTHONPATH": src} if src else {}
        extra = ["--workers", str(workers)] if workers > 1 else []
        server = ServerProcess(f"sqlite:///{workdir / 'bench.db'}", config_text=config, workdir=workdir, extra_args=extra, env=env)
        server.start()
        try:
            assert server.proc is not None
            for latency in upstreams:
                for stream in (False, True):
                    params = {**PARAMS, "model": f"up{latency}", **({"stream": True} if stream else {})}
                    check = httpx.post(f"{server.url}/v1/messages", json=params, headers={"x-api-key": "bench", "anthropic-version": "2023-06-01"}, timeout=30)
                    check.raise_for_status()
                    script = workdir / f"post-{latency}-{stream}.lua"
                    script.write_text(LUA.format(body=json.dumps(params)))
                    for connections in args.connections:
                        wrk(f"{server.url}/v1/messages", script, connections, 1)  # warm up
                        before = tree_cpu_seconds(server.proc.pid)
                        requests, rate, bad = wrk(f"{server.url}/v1/messages", script, connections, args.seconds)
                        cpu = tree_cpu_seconds(server.proc.pid) - before
                        rows.append(
                            {
                                "code": label, "workers": workers, "upstream_ms": latency,
                                "answer": "sse" if stream else "json", "connections": connections,
                                "req_per_s": round(rate), "cpu_ms_per_call": round(1000 * cpu / max(requests, 1), 3),
                                "non_2xx": bad,
                                "of_ideal": round(rate / (connections / (latency / 1000)), 2) if latency else None,
                            }
                        )  # fmt: skip
                        print(json.dumps(rows[-1]), flush=True)
        finally:
            server.stop()
    return rows


def direct(upstreams: dict[int, str], args: argparse.Namespace) -> list[dict]:  # type: ignore[type-arg]
    """The upstreams with nothing in front: wrk, then a bare aiohttp loop."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for latency, url in upstreams.items():
            if not latency:
                continue
            for stream in (False, True):
                body = {"model": "bench", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}
                if stream:
                    body["stream"] = True
                script = Path(tmp) / "direct.lua"
                script.write_text(LUA.format(body=json.dumps(body)))
                for connections in args.connections:
                    target = f"{url}/v1/chat/completions"
                    wrk(target, script, connections, 1)
                    _, rate, _ = wrk(target, script, connections, args.seconds)
                    bare = asyncio.run(bare_aiohttp(target, json.dumps(body).encode(), connections, args.seconds))
                    for code, value in (("direct: wrk", rate), ("direct: bare aiohttp", bare)):
                        rows.append(
                            {
                                "code": code, "workers": "-", "upstream_ms": latency, "answer": "sse" if stream else "json",
                                "connections": connections, "req_per_s": round(value), "cpu_ms_per_call": None, "non_2xx": 0,
                                "of_ideal": round(value / (connections / (latency / 1000)), 2),
                            }
                        )  # fmt: skip
                        print(json.dumps(rows[-1]), flush=True)
    return rows


async def bare_aiohttp(url: str, body: bytes, connections: int, seconds: float) -> float:
    """Calls per second of ``connections`` loops posting ``body`` through one session."""
    done = 0
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256, limit_per_host=0)) as session:
        end = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal done
            while time.monotonic() < end:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(connections)))
        return done / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--latencies", type=int, nargs="+", default=[0, 50])
    parser.add_argument("--src", default=None, help="also run this source tree (PYTHONPATH) first: before/after")
    parser.add_argument("--direct", action="store_true", help="also measure the 50 ms upstream with nothing in front")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    print(f"# cpus={os.cpu_count()} wrk -t1, {args.seconds:g} s per point", flush=True)
    upstreams = {}
    procs = []
    try:
        for latency in args.latencies:
            proc, url = start_upstream(latency)
            procs.append(proc)
            upstreams[latency] = url
        variants = ([("before", args.src)] if args.src else []) + [("after", None)]
        rows = direct(upstreams, args) if args.direct else []
        for workers in args.workers:
            for label, src in variants:
                rows += run(label, src, workers, upstreams, args)
    finally:
        for proc in procs:
            proc.terminate()
    print("\n| code | workers | upstream | answer | connections | req/s | CPU ms/call | of ideal |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ideal = "" if r["of_ideal"] is None else f"{r['of_ideal']:.2f}"
        cpu = "" if r["cpu_ms_per_call"] is None else f"{r['cpu_ms_per_call']:.3f}"
        print(f"| {r['code']} | {r['workers']} | {r['upstream_ms']} ms | {r['answer']} | {r['connections']} | {r['req_per_s']:,} | {cpu} | {ideal} |")


if __name__ == "__main__":
    main()
