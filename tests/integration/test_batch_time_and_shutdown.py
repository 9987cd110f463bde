"""Expiry, archiving, deletion down to the rows, and clean shutdown, on servers of their own
with short periods configured."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import orjson
import pytest

from support.databases import BACKENDS, dispose, new_database, query
from support.helpers import finished_rows, make_client, raw, simple_params, wait_for_end, wait_until
from support.server import ServerProcess

SHORT_TIMES = """
[batches]
ttl = 2
archive_after = 4

[engine]
sweep_interval = 0.2
lease = 5

[[models]]
id = "crawl"
backend = "simulator"
latency_ms = 1500
max_concurrency = 1

[[models]]
id = "*"
backend = "simulator"
"""


@pytest.fixture(scope="module", params=BACKENDS)
def short_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("short")
    url = new_database(request.param, workdir)
    proc = ServerProcess(url, config_text=SHORT_TIMES, workdir=workdir)
    proc.start()
    yield proc
    proc.stop()
    dispose(url)


def request_rows(server: ServerProcess, batch_id: str) -> list[tuple[int, int]]:
    return query(server.database_url, "SELECT idx, state FROM batch_requests WHERE batch_id = $1", batch_id)


def test_unfinished_requests_expire_at_expires_at(short_server: ServerProcess) -> None:
    client = make_client(short_server.url)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"e{i}", "params": simple_params(model="crawl")} for i in range(5)]
    )
    assert (batch.expires_at - batch.created_at).total_seconds() == 2
    ended = wait_for_end(client, batch.id, timeout=20)
    counts = ended.request_counts
    assert counts.expired >= 3
    assert counts.succeeded + counts.expired == 5
    assert ended.ended_at >= batch.expires_at
    lines = list(client.messages.batches.results(batch.id))
    assert len(lines) == 5
    assert sum(1 for line in lines if line.result.type == "expired") == counts.expired
    with raw(short_server.url) as http:
        text = http.get(f"/v1/messages/batches/{batch.id}/results").text
    expired = [orjson.loads(line) for line in text.splitlines() if '"expired"' in line]
    assert all(line["result"] == {"type": "expired"} for line in expired)
    time.sleep(2)  # a request that was running at expiry finishes late: it must not be counted twice
    assert client.messages.batches.retrieve(batch.id).request_counts == counts


def test_archived_batches_keep_their_record_but_not_their_results(short_server: ServerProcess) -> None:
    client = make_client(short_server.url)
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": simple_params()}])
    wait_for_end(client, batch.id)
    assert len(request_rows(short_server, batch.id)) == 1
    deadline = time.monotonic() + 20
    while (current := client.messages.batches.retrieve(batch.id)).archived_at is None:
        assert time.monotonic() < deadline, "batch was never archived"
        time.sleep(0.2)
    assert current.processing_status == "ended"
    assert current.request_counts.succeeded == 1
    with raw(short_server.url) as http:
        response = http.get(f"/v1/messages/batches/{batch.id}/results")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == f"Message Batch {batch.id} has no available results."
    assert request_rows(short_server, batch.id) == []


def test_delete_removes_every_row(short_server: ServerProcess) -> None:
    client = make_client(short_server.url)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"d{i}", "params": simple_params()} for i in range(50)]
    )
    wait_for_end(client, batch.id)
    assert len(request_rows(short_server, batch.id)) == 50
    client.messages.batches.delete(batch.id)
    assert request_rows(short_server, batch.id) == []
    assert query(short_server.database_url, "SELECT count(*) FROM batches WHERE id = $1", batch.id) == [(0,)]


SLOW = """
[engine]
shutdown_grace = 1

[[models]]
id = "*"
backend = "simulator"
latency_ms = 400
max_concurrency = 4
"""


def test_sigterm_leaves_work_resumable_and_nothing_twice(tmp_path: Path, fresh_database_url: str) -> None:
    proc = ServerProcess(fresh_database_url, config_text=SLOW, workdir=tmp_path)
    proc.start()
    client = make_client(proc.url)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"t{i}", "params": simple_params(f"t {i}")} for i in range(40)]
    )
    wait_until(lambda: finished_rows(fresh_database_url, batch.id) >= 1, what="the first results")
    started = time.monotonic()
    assert proc.stop() == 0
    assert time.monotonic() - started < 10
    states = dict(query(fresh_database_url, "SELECT state, count(*) FROM batch_requests GROUP BY state"))
    assert states.get(1, 0) == 0, f"requests left running after a clean shutdown: {states}"
    assert states.get(2, 0) >= 1 and states.get(0, 0) >= 1

    proc.start()
    try:
        client = make_client(proc.url)
        ended = wait_for_end(client, batch.id)
        assert ended.request_counts.succeeded == 40
        lines = list(client.messages.batches.results(batch.id))
        assert sorted(line.custom_id for line in lines) == sorted(f"t{i}" for i in range(40))
    finally:
        proc.stop()


def test_restart_keeps_accepted_batches(tmp_path: Path, fresh_database_url: str) -> None:
    proc = ServerProcess(fresh_database_url, workdir=tmp_path)
    proc.start()
    client = make_client(proc.url)
    batch = client.messages.batches.create(requests=[{"custom_id": "k", "params": simple_params()}])
    proc.kill()  # no goodbye at all
    proc.start()
    try:
        client = make_client(proc.url)
        assert wait_for_end(client, batch.id).request_counts.succeeded == 1
    finally:
        proc.stop()


def test_anthropic_results_url_follows_public_url(tmp_path: Path) -> None:
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'pub.db'}", workdir=tmp_path, env={"BATCHYARD_PUBLIC_URL": "https://batches.example.test/"}
    )
    proc.start()
    try:
        client = make_client(proc.url)
        batch = client.messages.batches.create(requests=[{"custom_id": "p", "params": simple_params()}])
        ended = wait_for_end(client, batch.id)
        assert ended.results_url == f"https://batches.example.test/v1/messages/batches/{batch.id}/results"
        with pytest.raises(anthropic.APIConnectionError):
            list(make_client(proc.url, timeout=2).messages.batches.results(batch.id))
    finally:
        proc.stop()
