"""How free the event loop stays under batch work: the worst latency of ``GET /health``,
polled every 10 ms while a large batch is created and then processed.

One server process (SQLite, the simulator at 0 ms: the engine runs flat out), one batch of
``--requests`` lines of ``--param-bytes`` each (100,000 x 1 KB: ~100 MB). A thread polls
/health on one keep-alive connection throughout; the latencies are reported for the create
(the upload and its ingest) and for the processing, separately.

    .venv/bin/python bench/bench_health.py
    .venv/bin/python bench/bench_health.py --requests 20000
    .venv/bin/python bench/bench_health.py --src /tmp/old/src   # another checkout's code, same run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_batches import HEADERS, body  # noqa: E402

from support.server import ServerProcess  # noqa: E402

CONFIG = """
[[models]]
id = "*"
backend = "simulator"
"""


class Poller(threading.Thread):
    def __init__(self, url: str, every: float) -> None:
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.samples: list[tuple[float, float]] = []  # (when, seconds)
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set():
                started = time.perf_counter()
                http.get(f"{self.url}/health")
                self.samples.append((started, time.perf_counter() - started))
                time.sleep(max(0.0, self.every - (time.perf_counter() - started)))

    def between(self, start: float, end: float) -> list[float]:
        return [s for t, s in self.samples if start <= t < end]


def summary(name: str, latencies: list[float]) -> str:
    if not latencies:
        return f"{name}: no samples"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{name}: {len(ordered)} polls, p50 {statistics.median(ordered) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--param-bytes", type=int, default=1000)
    parser.add_argument("--every", type=float, default=0.01)
    parser.add_argument("--src", default=None, help="run the server from this source tree (PYTHONPATH)")
    args = parser.parse_args()
    payload = body(args.requests, args.param_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PYTHONPATH": args.src} if args.src else {}
        server = ServerProcess(f"sqlite:///{tmp}/bench.db", config_text=CONFIG, workdir=Path(tmp), env=env)
        server.start()
        poller = Poller(server.url, args.every)
        try:
            poller.start()
            time.sleep(1.0)
            idle_end = time.perf_counter()
            with httpx.Client(base_url=server.url, headers=HEADERS, timeout=600) as http:
                created = http.post("/v1/messages/batches", content=payload)
                created.raise_for_status()
                create_end = time.perf_counter()
                batch_id = created.json()["id"]
                while http.get(f"/v1/messages/batches/{batch_id}").json()["processing_status"] != "ended":
                    time.sleep(0.2)
            done = time.perf_counter()
        finally:
            poller.stop.set()
            poller.join(5)
            server.stop()
    print(f"{args.requests} requests, {len(payload) / 1e6:.0f} MB body; create {create_end - idle_end:.2f} s, "
          f"processing {done - create_end:.2f} s")
    print(summary("idle      ", poller.between(0, idle_end)))
    print(summary("create    ", poller.between(idle_end, create_end)))
    print(summary("processing", poller.between(create_end, done)))
    print(summary("overall   ", poller.between(idle_end, done)))


if __name__ == "__main__":
    main()
