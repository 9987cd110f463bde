"""The Admin API's usage report over a month of recorded traffic.

1,000,000 requests spread at random over the last 30 days (10 workspaces x 2 keys, 3 models,
both tiers) are written straight into the buckets of a fresh database (minute, hour and day
rows, as the server writes them as it answers), then the report is asked for 30 days of 1h buckets (720
buckets: five pages of at most 168), grouped by workspace and model, against a real server.

    .venv/bin/python bench/bench_usage.py
    .venv/bin/python bench/bench_usage.py --database pg
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from support.server import ServerProcess  # noqa: E402

MINUTE = 60_000_000
DAY = 1440 * MINUTE
WIDTHS = (MINUTE, 60 * MINUTE, DAY)
COLUMNS = (
    "width, start, workspace_id, key_id, model, service_tier, requests, uncached_input_tokens, "
    "cache_creation_input_tokens, cache_read_input_tokens, output_tokens"
)


def usage_rows(requests: int, days: int, seed: int = 5) -> list[tuple[object, ...]]:
    """Bucket rows (each use in its minute, hour and day, as the server writes them) for
    ``requests`` requests at random times of the last ``days`` days."""
    rng = random.Random(seed)
    now = time.time_ns() // 1000
    start = now - now % DAY - (days - 1) * DAY
    combos = [
        (f"wrkspc_{w}", f"apikey_{w}_{k}", model, tier)
        for w in range(10)
        for k in range(2)
        for model in ("claude-sim", "sim-large", "smollm2")
        for tier in ("standard", "batch")
    ]
    buckets: dict[tuple[object, ...], list[int]] = {}
    span = max(1, (now - start) // MINUTE)
    for _ in range(requests):
        minute = start + rng.randrange(span) * MINUTE
        combo = rng.choice(combos)
        tokens_in, tokens_out = rng.randint(10, 2000), rng.randint(1, 500)
        for width in WIDTHS:
            entry = buckets.setdefault((width, minute - minute % width, *combo), [0, 0, 0])
            entry[0] += 1
            entry[1] += tokens_in
            entry[2] += tokens_out
    return [(*key, n, tokens_in, 0, 0, tokens_out) for key, (n, tokens_in, tokens_out) in buckets.items()]


def fill(database: str, rows: list[tuple[object, ...]]) -> None:
    if database.startswith("sqlite"):
        with sqlite3.connect(database.removeprefix("sqlite:///")) as conn:
            conn.executemany(f"INSERT INTO usage_buckets ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        return
    import asyncpg

    async def copy() -> None:
        conn = await asyncpg.connect(database)
        try:
            await conn.copy_records_to_table("usage_buckets", records=rows, columns=[c.strip() for c in COLUMNS.split(",")])
        finally:
            await conn.close()

    asyncio.run(copy())


def admin_key(database: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "batchyard", "keys", "create", "--admin", "--database", database],
        capture_output=True, text=True, timeout=120, cwd=cwd, env={**os.environ}, check=True,
    )
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--database", default=None, help="sqlite (default) or pg")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        temporary = args.database == "pg"
        database = create_postgres_database() if temporary else f"sqlite:///{workdir / 'usage.db'}"
        try:
            key = admin_key(database, workdir)  # (migrates the new database too)
            rows = usage_rows(args.requests, args.days)
            started = time.perf_counter()
            fill(database, rows)
            print(f"# cpus={os.cpu_count()} database={args.database or 'sqlite'}: {args.requests} requests in "
                  f"{len(rows)} bucket rows over {args.days} days, written in {time.perf_counter() - started:.1f} s",
                  flush=True)
            server = ServerProcess(database, config_text='[[models]]\nid = "*"\nbackend = "simulator"\n', workdir=workdir)
            server.start()
            try:
                http = httpx.Client(base_url=server.url, headers={"x-api-key": key, "anthropic-version": "2023-06-01"}, timeout=120)
                today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                start = datetime.fromtimestamp(today.timestamp() - (args.days - 1) * 86400, UTC)
                params = {
                    "starting_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "ending_at": datetime.fromtimestamp(today.timestamp() + 86400, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "bucket_width": "1h",
                    "limit": "168",
                    "group_by[]": ["workspace_id", "model"],
                }
                pages, whole = [], []
                for _ in range(args.repeat):
                    began = time.perf_counter()
                    page: str | None = None
                    buckets = results = tokens = 0
                    while True:
                        asked = time.perf_counter()
                        answer = http.get("/v1/organizations/usage_report/messages", params={**params, **({"page": page} if page else {})})
                        answer.raise_for_status()
                        pages.append(time.perf_counter() - asked)
                        body = answer.json()
                        buckets += len(body["data"])
                        for bucket in body["data"]:
                            results += len(bucket["results"])
                            tokens += sum(r["uncached_input_tokens"] + r["output_tokens"] for r in bucket["results"])
                        page = body["next_page"]
                        if not body["has_more"]:
                            break
                    whole.append(time.perf_counter() - began)
                expected = sum(int(r[7]) + int(r[10]) for r in rows if r[0] == MINUTE)  # type: ignore[call-overload]
                assert tokens == expected, (tokens, expected)
                print(json.dumps({
                    "buckets": buckets,
                    "results": results,
                    "page_ms_median": round(statistics.median(pages) * 1000, 1),
                    "page_ms_max": round(max(pages) * 1000, 1),
                    "report_ms_median": round(statistics.median(whole) * 1000, 1),
                    "report_ms_max": round(max(whole) * 1000, 1),
                }), flush=True)
            finally:
                server.stop()
        finally:
            if temporary:
                drop_postgres_database(database)


if __name__ == "__main__":
    main()
