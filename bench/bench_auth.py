"""Cost of API keys and rate limiting per request: /v1/messages (simulator, 0 ms) with wrk
at 64 connections, in open mode and then with a key (limit high enough never to refuse).

    .venv/bin/python bench/bench_auth.py --seconds 8
    .venv/bin/python bench/bench_auth.py --seconds 8 --database pg   # shared buckets in PostgreSQL
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import re  # noqa: E402

from bench_messages import BODY, WRK_SCRIPT, _ms  # noqa: E402

from support.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from support.server import ServerProcess  # noqa: E402

CONFIG = """
[rate_limits]
requests_per_minute = 1000000000

[[models]]
id = "*"
backend = "simulator"
"""


def wrk(url: str, key: str, connections: int, seconds: float, workdir: Path) -> dict[str, float]:
    script = workdir / "auth.lua"
    script.write_text(WRK_SCRIPT.replace('"bench"', f'"{key}"') % BODY.decode())
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", str(script), f"{url}/v1/messages"],
        capture_output=True, text=True, check=True,
    ).stdout
    if "Latency Distribution" not in out:
        raise RuntimeError(f"wrk printed no latencies:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "req_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))),
        "p50_ms": round(_ms(re.search(r"^\s+50%\s+(\S+)$", out, re.M).group(1)), 2),
        "p99_ms": round(_ms(re.search(r"^\s+99%\s+(\S+)$", out, re.M).group(1)), 2),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--database", choices=["sqlite", "pg"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = f"sqlite:///{workdir / 'auth.db'}" if args.database == "sqlite" else create_postgres_database()
        rows = {}
        for mode in ("open", "keys"):
            key = "bench"
            if mode == "keys":
                done = subprocess.run(
                    [sys.executable, "-m", "batchyard", "keys", "create", "--workspace", "bench", "--database", url],
                    capture_output=True, text=True, check=True, cwd=workdir,
                )
                key = done.stdout.strip()
            server = ServerProcess(url, config_text=CONFIG, workdir=workdir)
            server.start()
            try:
                wrk(server.url, key, args.connections, 2, workdir)  # warm up
                rows[mode] = wrk(server.url, key, args.connections, args.seconds, workdir)
            finally:
                server.stop()
        if args.database == "pg":
            drop_postgres_database(url)
        print(f"# cpus={os.cpu_count()} wrk -c{args.connections}, POST /v1/messages, simulator 0 ms, {args.database}", flush=True)
        for mode, row in rows.items():
            print(json.dumps({"mode": mode, **row}), flush=True)
        print(json.dumps({
            "added_p50_ms": round(rows["keys"]["p50_ms"] - rows["open"]["p50_ms"], 2),
            "added_p99_ms": round(rows["keys"]["p99_ms"] - rows["open"]["p99_ms"], 2),
        }), flush=True)


if __name__ == "__main__":
    main()
