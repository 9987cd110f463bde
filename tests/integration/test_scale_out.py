"""Split roles on PostgreSQL: API processes and workers sharing one database, woken by
LISTEN/NOTIFY, sharing work fairly, seeing cancels quickly, and polling an idle database
no more than once a second."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from support.databases import create_postgres_database, drop_postgres_database, query
from support.helpers import finished_rows, make_client, raw, simple_params, wait_for_end, wait_until
from support.pgproxy import CountingProxy
from support.server import ServerProcess

CONFIG = """
[engine]
lease = 3
sweep_interval = 0.5
retry_base = 0.01

[[models]]
id = "slow-model"
backend = "simulator"
latency_ms = 300
max_concurrency = 8

[[models]]
id = "paced-model"
backend = "simulator"
latency_ms = 20
max_concurrency = 16

[[models]]
id = "narrow-model"
backend = "simulator"
latency_ms = 200
max_concurrency = 4

[[models]]
id = "*"
backend = "simulator"
"""


DEFAULT_ENGINE = CONFIG[CONFIG.index("[[models]]") :]


class Cluster:
    def __init__(self, url: str, workdir: Path, workers: int, config: str = CONFIG) -> None:
        self.url = url
        self.api = ServerProcess(url, config_text=config, workdir=workdir, extra_args=["--no-engine"])
        self.workers = [
            ServerProcess(url, config_text=config, workdir=workdir, command="worker") for _ in range(workers)
        ]

    def start(self) -> Cluster:
        self.api.start()
        for worker in self.workers:
            worker.start()
        return self

    def stop(self) -> None:
        for proc in [*self.workers, self.api]:
            proc.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(pg_url, tmp_path, workers=2).start()
    yield running
    running.stop()


def server_seconds(batch: anthropic.types.messages.MessageBatch) -> float:
    return (batch.ended_at - batch.created_at).total_seconds()


def test_idle_workers_wake_within_100ms(cluster: Cluster) -> None:
    client = make_client(cluster.api.url)
    time.sleep(2.5)  # let both workers go idle past their first poll
    spans = []
    for i in range(6):
        batch = client.messages.batches.create(requests=[{"custom_id": "w", "params": simple_params(f"wake {i}")}])
        spans.append(server_seconds(wait_for_end(client, batch.id)))
        time.sleep(0.7)
    # Without a wake-up the next poll would be up to 2 s away.
    assert statistics.median(spans) < 0.1, spans
    assert max(spans) < 0.5, spans


def test_idle_database_is_not_polled_more_than_once_a_second(pg_url: str, tmp_path: Path) -> None:
    """With default engine settings an idle worker sends less than one statement a second:
    counted on the wire, through a proxy between it and PostgreSQL."""
    proxy = CountingProxy(pg_url).start()
    worker = ServerProcess(proxy.url, config_text=DEFAULT_ENGINE, workdir=tmp_path, command="worker")
    worker.start()
    try:
        time.sleep(3)
        before = proxy.count()
        time.sleep(10)
        sent = proxy.statements[before:]
    finally:
        worker.stop()
        proxy.stop()
    assert 1 <= len(sent) <= 10, sent


def test_two_workers_share_a_batch_and_end_it_once(cluster: Cluster) -> None:
    client = make_client(cluster.api.url)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"s{i}", "params": simple_params(f"share {i}", model="paced-model")} for i in range(600)]
    )
    ended = wait_for_end(client, batch.id)
    assert ended.request_counts.succeeded == 600
    lines = list(client.messages.batches.results(batch.id))
    assert sorted(line.custom_id for line in lines) == sorted(f"s{i}" for i in range(600))
    assert ended.ended_at is not None
    # Each worker ran its share (each holds at most 2 x 16 of the route at a time, so
    # neither can take it all); how fast they go together is bench/bench_batches.py's.
    for worker in cluster.workers:
        assert worker.stop() == 0
    completed = [int(re.findall(r'engine stopped .*completed=(\d+)', worker.log())[-1]) for worker in cluster.workers]
    assert sum(completed) == 600, completed
    assert min(completed) >= 100, completed


def test_cancel_reaches_every_worker_within_a_second(cluster: Cluster) -> None:
    client = make_client(cluster.api.url)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"c{i}", "params": simple_params(f"cancel {i}", model="slow-model")} for i in range(300)]
    )
    wait_until(lambda: finished_rows(cluster.url, batch.id) >= 16, what="work under way")
    canceled_at = time.time()
    assert client.messages.batches.cancel(batch.id).processing_status == "canceling"
    ended = wait_for_end(client, batch.id)
    assert ended.request_counts.canceled > 200
    latest_finish = query(
        cluster.url, "SELECT max(finished_at) FROM batch_requests WHERE batch_id = $1 AND state = 2", batch.id
    )[0][0]
    # Anything started more than 1 s after the cancel would finish after cancel + 1 s + 300 ms.
    assert latest_finish / 1e6 <= canceled_at + 1.0 + 0.3 + 0.25


def test_small_batch_is_not_stuck_behind_a_large_one(cluster: Cluster) -> None:
    client = make_client(cluster.api.url)
    big = client.messages.batches.create(
        requests=[{"custom_id": f"b{i}", "params": simple_params(f"big {i}", model="paced-model")} for i in range(20_000)]
    )
    wait_until(lambda: finished_rows(cluster.url, big.id) >= 100, what="the big batch under way")
    small = client.messages.batches.create(
        requests=[{"custom_id": f"s{i}", "params": simple_params(f"small {i}", model="paced-model")} for i in range(10)]
    )
    done = wait_for_end(client, small.id, timeout=30)
    assert done.request_counts.succeeded == 10
    assert server_seconds(done) < 3.0, server_seconds(done)
    assert client.messages.batches.retrieve(big.id).processing_status == "in_progress"
    client.messages.batches.cancel(big.id)
    wait_for_end(client, big.id, timeout=60)


def test_interactive_calls_go_ahead_of_batch_work(pg_url: str, tmp_path: Path) -> None:
    proc = ServerProcess(pg_url, config_text=CONFIG, workdir=tmp_path)  # API and engine in one process
    proc.start()
    try:
        client = make_client(proc.url)
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"n{i}", "params": simple_params(f"n {i}", model="narrow-model")} for i in range(400)]
        )
        # 4 slots at 200 ms: the queue holds ~20 s of batch work
        wait_until(lambda: finished_rows(pg_url, batch.id) >= 4, what="batch work under way")
        started = time.perf_counter()
        reply = client.messages.create(**simple_params("urgent", model="narrow-model"))
        waited = time.perf_counter() - started
        assert reply.stop_reason == "end_turn"
        assert waited < 0.2 + 0.2 + 0.4, waited  # its own 200 ms + at most one slot turning over
        client.messages.batches.cancel(batch.id)
        wait_for_end(client, batch.id)
    finally:
        proc.stop()


def test_metrics_and_readiness(cluster: Cluster) -> None:
    client = make_client(cluster.api.url)
    batch = client.messages.batches.create(requests=[{"custom_id": "m", "params": simple_params()}])
    wait_for_end(client, batch.id)
    client.messages.create(**simple_params())
    with raw(cluster.api.url) as http:
        http.get("/v1/messages/batches/nope")
        text = http.get("/metrics").text
        ready = http.get("/health/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "database": "ok"}
    assert 'batchyard_http_requests_total{handler="create_batch",status="200"} 1' in text
    assert 'batchyard_http_requests_total{handler="retrieve_batch",status="404"} 1' in text
    assert 'batchyard_backend_calls_total{kind="interactive",outcome="ok",route="*"} 1' in text
    assert "batchyard_backend_latency_seconds_bucket" in text
    assert 'batchyard_batch_requests{state="succeeded"}' in text
    assert "batchyard_queue_depth 0" in text
    assert 'batchyard_batches{status="ended"}' in text


def test_database_restart_mid_batch(pg_url: str, tmp_path: Path) -> None:
    import os
    import subprocess

    running = Cluster(pg_url, tmp_path, workers=1).start()
    try:
        client = make_client(cluster_url := running.api.url, max_retries=8)
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"r{i}", "params": simple_params(f"r {i}", model="paced-model")} for i in range(2000)]
        )
        wait_until(lambda: finished_rows(pg_url, batch.id) >= 100, what="the batch under way")
        restart = os.environ.get(
            "BATCHYARD_TEST_PG_RESTART",
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n 1) main restart",
        )
        subprocess.run(restart, shell=True, check=True, timeout=120)
        deadline = time.monotonic() + 120
        while True:
            try:
                current = client.messages.batches.retrieve(batch.id)
                if current.processing_status == "ended":
                    break
            except anthropic.APIStatusError as exc:
                assert exc.status_code == 503, exc
                assert exc.body["error"]["message"] == "The database is unavailable; try again shortly."
            except anthropic.APIConnectionError:
                pass
            assert time.monotonic() < deadline, "batch did not end after the database restart"
            time.sleep(0.2)
        assert current.request_counts.succeeded == 2000
        reader = make_client(cluster_url)  # keep a reference: a collected client closes its stream
        lines = list(reader.messages.batches.results(batch.id))
        assert sorted(line.custom_id for line in lines) == sorted(f"r{i}" for i in range(2000))
        # Both processes stayed up and are usable after the outage.
        assert httpx.get(f"{cluster_url}/health/ready").status_code == 200
        assert running.workers[0].proc.poll() is None
        again = client.messages.batches.create(requests=[{"custom_id": "after", "params": simple_params()}])
        assert wait_for_end(client, again.id).request_counts.succeeded == 1
    finally:
        running.stop()
