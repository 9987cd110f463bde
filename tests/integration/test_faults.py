"""Nothing lost, nothing twice: processes killed with SIGKILL mid-batch, flaky backends.

Every test checks the same end state: every request has exactly one result, the batch
ended once, and its counts add up."""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson

from support.databases import create_postgres_database, drop_postgres_database, query
from support.helpers import KILL_CONFIG, make_client, raw, simple_params, wait_for_end
from support.server import ServerProcess

# Ten kills may catch the same line running three times: with the default of three lost
# workers that line would rightly end as a poison line. These tests are about nothing
# lost and nothing twice, so no line here can reach the limit (poison lines: test_engine.py).


def assert_complete(server_url: str, database_url: str, batch_id: str, count: int) -> dict[str, int]:
    client = make_client(server_url)
    ended = wait_for_end(client, batch_id, timeout=120)
    counts = ended.request_counts
    assert counts.processing == 0
    assert counts.succeeded + counts.errored + counts.canceled + counts.expired == count
    with raw(server_url) as http:
        body = http.get(f"/v1/messages/batches/{batch_id}/results").content
    lines = [orjson.loads(line) for line in body.splitlines()]
    ids = [line["custom_id"] for line in lines]
    assert len(ids) == count and len(set(ids)) == count  # one result per request, none twice
    by_type: dict[str, int] = {}
    for line in lines:
        by_type[line["result"]["type"]] = by_type.get(line["result"]["type"], 0) + 1
    assert by_type.get("succeeded", 0) == counts.succeeded
    assert by_type.get("errored", 0) == counts.errored
    open_rows = query(
        database_url, "SELECT count(*) FROM batch_requests WHERE batch_id = $1 AND state IN (0, 1)", batch_id
    )
    assert open_rows == [(0,)]
    missing = query(
        database_url,
        "SELECT count(*) FROM batch_requests WHERE batch_id = $1 AND state IN (2, 3) AND result IS NULL",
        batch_id,
    )
    assert missing == [(0,)]
    return by_type


def test_kill_9_the_single_server_ten_times(tmp_path: Path, fresh_database_url: str) -> None:
    rng = random.Random(7)
    proc = ServerProcess(fresh_database_url, config_text=KILL_CONFIG, workdir=tmp_path)
    proc.start()
    client = make_client(proc.url)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"k{i}", "params": simple_params(f"kill {i}")} for i in range(2000)]
    )
    for _ in range(10):
        time.sleep(rng.uniform(0.2, 0.8))
        proc.kill()
        proc.start()
    try:
        by_type = assert_complete(proc.url, fresh_database_url, batch.id, 2000)
        assert by_type == {"succeeded": 2000}
    finally:
        proc.stop()


def test_kill_9_one_of_two_workers(tmp_path: Path) -> None:
    url = create_postgres_database()
    rng = random.Random(11)
    api = ServerProcess(url, config_text=KILL_CONFIG, workdir=tmp_path, extra_args=["--no-engine"])
    workers = [ServerProcess(url, config_text=KILL_CONFIG, workdir=tmp_path, command="worker") for _ in range(2)]
    try:
        api.start()
        for worker in workers:
            worker.start()
        client = make_client(api.url)
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"w{i}", "params": simple_params(f"worker {i}")} for i in range(2000)]
        )
        for _ in range(5):
            time.sleep(rng.uniform(0.3, 1.0))
            workers[0].kill()
            time.sleep(rng.uniform(0.0, 0.5))
            workers[0].start()
        by_type = assert_complete(api.url, url, batch.id, 2000)
        assert by_type == {"succeeded": 2000}
        assert workers[1].proc.poll() is None  # the survivor never stopped
    finally:
        for proc in [*workers, api]:
            proc.stop()
        drop_postgres_database(url)


CHAOS_CONFIG = """
[batches]
ttl = 30

[engine]
retry_base = 0.01
retry_cap = 0.05
sweep_interval = 0.5

[[models]]
id = "chaos"
backend = "simulator"
error_rate = 0.3
error_types = ["rate_limit_error", "overloaded_error", "api_error", "timeout_error", "connection_error"]
max_attempts = 12

[[models]]
id = "always-down"
backend = "simulator"
error_rate = 1.0
error_types = ["overloaded_error"]
max_attempts = 3

[[models]]
id = "refuses"
backend = "simulator"
error_rate = 1.0
error_types = ["invalid_request_error"]
max_attempts = 5

[[models]]
id = "slow-to-recover"
backend = "simulator"
error_rate = 1.0
error_types = ["rate_limit_error"]
retry_after = 60
max_attempts = 10
"""


def test_retries_survive_a_flaky_backend(tmp_path: Path, fresh_database_url: str) -> None:
    proc = ServerProcess(fresh_database_url, config_text=CHAOS_CONFIG, workdir=tmp_path)
    proc.start()
    try:
        client = make_client(proc.url)
        lines = [{"custom_id": f"c{i}", "params": simple_params(f"chaos {i}", model="chaos")} for i in range(500)]
        lines += [{"custom_id": f"down{i}", "params": simple_params(model="always-down")} for i in range(5)]
        lines += [{"custom_id": f"refused{i}", "params": simple_params(model="refuses")} for i in range(5)]
        lines += [{"custom_id": f"late{i}", "params": simple_params(model="slow-to-recover")} for i in range(3)]
        batch = client.messages.batches.create(requests=lines)
        by_type = assert_complete(proc.url, fresh_database_url, batch.id, len(lines))
        assert by_type == {"succeeded": 500, "errored": 13}

        results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
        assert results["down0"].error.error.type == "overloaded_error"
        assert results["refused0"].error.error.type == "invalid_request_error"
        assert results["late0"].error.error.type == "rate_limit_error"
        attempts = dict(
            query(fresh_database_url, "SELECT custom_id, attempts FROM batch_requests WHERE batch_id = $1", batch.id)
        )
        assert attempts["down0"] == 3  # retried up to the route's limit
        assert attempts["refused0"] == 1  # not retryable: errored at once
        assert attempts["late0"] == 1  # retry-after 60 s lands past expires_at (30 s): errored, not retried
        assert max(attempts[f"c{i}"] for i in range(500)) > 1  # some chaos lines needed retries
        with raw(proc.url) as http:
            metrics = http.get("/metrics").text
        retried = [line for line in metrics.splitlines() if line.startswith('batchyard_batch_request_retries_total{route="chaos"}')]
        assert retried and float(retried[0].split()[-1]) > 0
    finally:
        proc.stop()
