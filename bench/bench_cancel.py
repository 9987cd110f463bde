"""How long a cancel of a large batch takes to end it: 100,000 requests on a 1-second
backend (64 at a time), canceled right after create; seconds from cancel_initiated_at to
ended_at (the server's own timestamps), and how many ended canceled. Target: within 5 s on
both databases.

    .venv/bin/python bench/bench_cancel.py
    .venv/bin/python bench/bench_cancel.py --database pg --requests 100000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_batches import HEADERS, body  # noqa: E402

from support.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from support.server import ServerProcess  # noqa: E402

CONFIG = """
[[models]]
id = "*"
backend = "simulator"
latency_ms = 1000
max_concurrency = 64
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--database", default=None, help="pg: a temporary PostgreSQL database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        temporary = args.database == "pg"
        url = create_postgres_database() if temporary else (args.database or f"sqlite:///{tmp}/bench.db")
        server = ServerProcess(url, config_text=CONFIG, workdir=Path(tmp)).start()
        try:
            with httpx.Client(base_url=server.url, headers=HEADERS, timeout=600) as http:
                created = http.post("/v1/messages/batches", content=body(args.requests, 150)).json()
                canceled = http.post(f"/v1/messages/batches/{created['id']}/cancel").json()
                asked = time.perf_counter()
                while (batch := http.get(f"/v1/messages/batches/{created['id']}").json())["processing_status"] != "ended":
                    time.sleep(0.05)
                seen = time.perf_counter() - asked
            took = datetime.fromisoformat(batch["ended_at"]) - datetime.fromisoformat(canceled["cancel_initiated_at"])
            counts = batch["request_counts"]
            print(
                f"{args.requests} requests on {'postgresql' if url.startswith('postgresql') else 'sqlite'}: "
                f"ended {took.total_seconds():.2f} s after the cancel (seen ended by the client after {seen:.2f} s); canceled {counts['canceled']}, "
                f"succeeded {counts['succeeded']}"
            )
        finally:
            server.stop()
            if temporary:
                drop_postgres_database(url)


if __name__ == "__main__":
    main()
