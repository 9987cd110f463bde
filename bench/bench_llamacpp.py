"""The in-process llama.cpp backend: aggregate output tokens/s of a 64-line batch with
n_parallel 1, 4 and 8, next to sequential generation with the same wheel in a plain loop.

    .venv/bin/python bench/bench_llamacpp.py --threads 1
    .venv/bin/python bench/bench_llamacpp.py --threads 2 --parallel 1 4 8

Every line asks for up to --max-tokens tokens; counts come from the results' usage.
"""

from __future__ import annotations

import argparse
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
from support.llama import gguf_path  # noqa: E402
from support.server import ServerProcess  # noqa: E402

HEADERS = {"x-api-key": "bench", "anthropic-version": "2023-06-01"}
TOPICS = ["rivers", "mountains", "bread", "the moon", "bicycles", "libraries", "winter", "bees"]


def prompts(n: int) -> list[str]:
    return [f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} (variation {i})." for i in range(n)]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sequential(n: int, max_tokens: int, threads: int) -> dict[str, object]:
    """The same wheel, one request after another, no batchyard."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf_path())
    params.n_parallel = 1
    params.n_ctx = 2048
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.port = 0
    params.hostnames = ["127.0.0.1"]
    params.verbosity = 2
    server = xllamacpp.Server(params)
    tokens = 0
    started = time.perf_counter()
    for text in prompts(n):
        answer = server.handle_chat_completions(
            {"model": "m", "max_tokens": max_tokens, "temperature": 0, "messages": [{"role": "user", "content": text}]}
        )
        tokens += answer["usage"]["completion_tokens"]
    seconds = time.perf_counter() - started
    del server
    return {"mode": "sequential loop", "n_parallel": 1, "output_tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1)}


def through_batchyard(n: int, max_tokens: int, threads: int, n_parallel: int) -> dict[str, object]:
    config = f"""
[[models]]
id = "smol"
backend = "llamacpp"
model_path = "{gguf_path()}"
n_parallel = {n_parallel}
n_threads = {threads}
n_ctx = 1024
"""
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(f"sqlite:///{Path(tmp) / 'b.db'}", config_text=config, workdir=Path(tmp))
        server.start()
        try:
            http = httpx.Client(base_url=server.url, headers=HEADERS, timeout=600)
            body = {"requests": [
                {"custom_id": f"p{i}", "params": {"model": "smol", "max_tokens": max_tokens, "temperature": 0,
                                                   "messages": [{"role": "user", "content": text}]}}
                for i, text in enumerate(prompts(n))
            ]}
            batch = http.post("/v1/messages/batches", json=body).json()
            while batch["processing_status"] != "ended":
                time.sleep(0.2)
                batch = http.get(f"/v1/messages/batches/{batch['id']}").json()
            assert batch["request_counts"]["succeeded"] == n, batch["request_counts"]
            seconds = (datetime.fromisoformat(batch["ended_at"]) - datetime.fromisoformat(batch["created_at"])).total_seconds()
            lines = [json.loads(line) for line in http.get(f"/v1/messages/batches/{batch['id']}/results").text.splitlines()]
            tokens = sum(line["result"]["message"]["usage"]["output_tokens"] for line in lines)
            return {"mode": "batchyard batch", "n_parallel": n_parallel, "output_tokens": tokens,
                    "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
                    "peak_rss_mb": round(peak_rss_mb(server.proc.pid))}
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    print(f"# cpus={os.cpu_count()} n_threads={args.threads} lines={args.lines} max_tokens={args.max_tokens}", flush=True)
    base = sequential(args.lines, args.max_tokens, args.threads)
    print(json.dumps(base), flush=True)
    for n_parallel in args.parallel:
        row = through_batchyard(args.lines, args.max_tokens, args.threads, n_parallel)
        row["vs_sequential"] = round(row["tokens_per_s"] / base["tokens_per_s"], 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
