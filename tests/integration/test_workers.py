"""`serve --workers N`: N API processes on one port, one engine per SQLite file (an engine
in each on PostgreSQL), notices and rate limits shared, a dead worker started again, and
the whole group stopped by one SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from support.databases import query
from support.helpers import HEADERS, make_client, simple_params, wait_for_end, wait_until
from support.server import ServerProcess

# A long poll: a batch created on a worker without the engine is found at once only if the
# created notice reaches the engine's worker.
CONFIG = """
[engine]
poll_interval = 60
lease = 3
sweep_interval = 0.3

[[models]]
id = "slow"
backend = "simulator"
latency_ms = 100
max_concurrency = 16

[[models]]
id = "*"
backend = "simulator"
"""


def worker_pids(supervisor_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(supervisor_pid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def test_two_workers_share_notices_and_survive_the_engine_dying(tmp_path: Path, fresh_database_url: str) -> None:
    proc = ServerProcess(fresh_database_url, config_text=CONFIG, workdir=tmp_path, extra_args=["--workers", "2"]).start()
    try:
        wait_until(lambda: len(worker_pids(proc.proc.pid)) == 2, what="two workers")
        wait_until(lambda: proc.log().count("engine started") >= (2 if fresh_database_url.startswith("postgresql") else 1))
        if fresh_database_url.startswith("sqlite"):
            # Both processes serve (each logs it once it has started); one engine among them.
            wait_until(lambda: proc.log().count("engine=true") + proc.log().count("engine=false") >= 2, what="both serving")
            assert proc.log().count("engine=true") == 1 and proc.log().count("engine=false") == 1
        client = make_client(proc.url)
        for i in range(6):  # new connections: some land on the worker without the engine
            with httpx.Client(base_url=proc.url, headers=HEADERS, timeout=30) as http:
                created = http.post("/v1/messages/batches", json={"requests": [{"custom_id": "n", "params": simple_params(f"n {i}")}]})
            wait_for_end(client, created.json()["id"], timeout=15)  # far less than the 60 s poll

        big = client.messages.batches.create(
            requests=[{"custom_id": f"b{i}", "params": simple_params(f"b {i}", model="slow")} for i in range(300)]
        )
        engine_pid = next(pid for pid in worker_pids(proc.proc.pid) if _runs_engine(proc, pid))
        os.kill(engine_pid, signal.SIGKILL)
        wait_until(lambda: len(worker_pids(proc.proc.pid)) == 2 and engine_pid not in worker_pids(proc.proc.pid),
                   what="the dead worker started again")
        ended = wait_for_end(client, big.id, timeout=120)
        assert ended.request_counts.succeeded == 300
        ids = [line.custom_id for line in client.messages.batches.results(big.id)]
        assert sorted(ids) == sorted(f"b{i}" for i in range(300))
        assert "worker died; starting it again" in proc.log()
    finally:
        code = proc.stop()
    assert code == 0
    assert worker_pids(proc.proc.pid) == []


def _runs_engine(proc: ServerProcess, pid: int) -> bool:
    return any(f":{pid}:" in line for line in proc.log().splitlines() if "engine started" in line)


def test_workers_share_one_rate_limit_bucket_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rl.db'}"
    config = "[rate_limits]\nrequests_per_minute = 5\n\n[[models]]\nid = \"*\"\nbackend = \"simulator\"\n"
    made = subprocess.run(
        [sys.executable, "-m", "batchyard", "keys", "create", "--workspace", "w", "--database", url],
        capture_output=True, text=True, timeout=60, check=True,
    )
    key = made.stdout.strip()
    proc = ServerProcess(url, config_text=config, workdir=tmp_path, extra_args=["--workers", "2"]).start()
    try:
        allowed = 0
        for _ in range(30):
            with httpx.Client(base_url=proc.url, timeout=10) as http:  # a new connection each time
                reply = http.get("/v1/models", headers={**HEADERS, "x-api-key": key})
            assert reply.status_code in (200, 429)
            allowed += reply.status_code == 200
        assert allowed == 5
        assert query(url, "SELECT count(*) FROM rate_buckets") == [(1,)]  # one bucket, in the database
    finally:
        assert proc.stop() == 0
