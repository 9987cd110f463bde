"""/v1/chat/completions (OpenAI SDK compatibility) and /v1/complete next to /v1/messages:
one server (simulator, 0 ms), one load generator (wrk), the same run, the same question.

    .venv/bin/python bench/bench_chat.py --concurrency 1 64 --seconds 8 --rounds 3
    .venv/bin/python bench/bench_chat.py --backend openai   # through the openai backend

With ``--backend openai`` the model's route is the ``openai`` backend in front of
``fake_openai_upstream.py`` (0 ms, a fixed answer), so /v1/chat/completions goes through two
translations (chat -> Messages -> chat and back) where /v1/messages goes through one.

Each round runs every endpoint once per concurrency, in turn, so that drift of a busy
machine falls on all of them alike. Prints one JSON line per run, then one summary line
per endpoint and concurrency (median of the rounds) with its ratio to /v1/messages (the
median of the rounds' ratios).
Needs wrk (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from fake_openai_upstream import start_upstream  # noqa: E402

from support.server import ServerProcess  # noqa: E402

QUESTION = "Tell me about rivers"
ENDPOINTS = {
    "/v1/messages": (
        {"x-api-key": "bench", "anthropic-version": "2023-06-01"},
        {"model": "claude-sim", "max_tokens": 64, "messages": [{"role": "user", "content": QUESTION}]},
    ),
    # What the openai SDK sends: a Bearer key and no anthropic-version.
    "/v1/chat/completions": (
        {"authorization": "Bearer bench"},
        {"model": "claude-sim", "max_tokens": 64, "messages": [{"role": "user", "content": QUESTION}]},
    ),
    "/v1/complete": (
        {"x-api-key": "bench", "anthropic-version": "2023-06-01"},
        {"model": "claude-sim", "max_tokens_to_sample": 64, "prompt": f"\n\nHuman: {QUESTION}\n\nAssistant:"},
    ),
}

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
%s
"""


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, path: str, concurrency: int, seconds: float, workdir: Path) -> dict[str, object]:
    headers, body = ENDPOINTS[path]
    script = workdir / "post.lua"
    lines = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items())
    script.write_text(WRK_SCRIPT % (json.dumps(body), lines))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency", "-s", str(script), f"{url}{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if not re.search(r"^\s*99%\s+\S+$", out, re.M):
        raise RuntimeError(f"wrk gave no latency distribution:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "endpoint": path,
        "concurrency": concurrency,
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "errors": int(errors.group(1)) if errors else 0,
        "req_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))),
        "p50_ms": round(_ms(re.search(r"^\s+50%\s+(\S+)$", out, re.M).group(1)), 2),
        "p99_ms": round(_ms(re.search(r"^\s+99%\s+(\S+)$", out, re.M).group(1)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--endpoints", nargs="+", default=list(ENDPOINTS), choices=list(ENDPOINTS))
    parser.add_argument("--backend", choices=["simulator", "openai"], default="simulator")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    runs: dict[tuple[str, int], list[dict[str, object]]] = {}
    upstream = None
    config = None
    if args.backend == "openai":
        upstream, upstream_url = start_upstream(0)
        config = f'[[models]]\nid = "claude-sim"\nbackend = "openai"\nbase_url = "{upstream_url}/v1"\nmodel = "bench"\n'
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(f"sqlite:///{Path(tmp) / 'bench.db'}", config_text=config, workdir=Path(tmp))
        server.start()
        try:
            print(f"# cpus={os.cpu_count()} backend {args.backend} at 0 ms; wrk -t1 on the same machine", flush=True)
            for path in args.endpoints:  # warm up every route once
                run_wrk(server.url, path, 4, 1, Path(tmp))
            for number in range(args.rounds):
                # Every other round runs the endpoints in reverse order, so that no endpoint
                # always goes first (or last) after a change of concurrency.
                order = args.endpoints if number % 2 == 0 else args.endpoints[::-1]
                for concurrency in args.concurrency:
                    for path in order:
                        row = run_wrk(server.url, path, concurrency, args.seconds, Path(tmp))
                        runs.setdefault((path, concurrency), []).append(row)
                        print(json.dumps(row), flush=True)
        finally:
            server.stop()
            if upstream is not None:
                upstream.terminate()
                upstream.wait(10)
    for concurrency in args.concurrency:
        base = runs.get(("/v1/messages", concurrency))
        for path in args.endpoints:
            rows = runs[(path, concurrency)]
            summary = {
                "summary": path,
                "concurrency": concurrency,
                "req_per_s": round(statistics.median(r["req_per_s"] for r in rows)),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in rows), 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in rows), 2),
                # Each round's ratio to /v1/messages in the same round, then their median:
                # drift of a shared machine cancels out within a round.
                "vs_messages": (
                    round(statistics.median(r["req_per_s"] / m["req_per_s"] for r, m in zip(rows, base, strict=False)), 3)
                    if base
                    else None
                ),
                "errors": sum(r["errors"] for r in rows),
            }
            print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
