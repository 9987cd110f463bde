"""The engine as real server processes: one engine per SQLite file, a line that crashes
its worker, a cancel landing on a batch whose every request is in flight."""

from __future__ import annotations

import time
from pathlib import Path

import anthropic
import orjson

from batchyard.outcomes import lease_lost_message
from support.databases import query
from support.helpers import make_client, raw, simple_params, wait_for_end
from support.server import ServerProcess

SLOW = """
[[models]]
id = "*"
backend = "simulator"
latency_ms = 8000
"""


def until(condition, timeout: float = 30.0, what: str = "the condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_second_engine_on_a_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    first = ServerProcess(url, config_text=SLOW, workdir=tmp_path).start()
    others: list[ServerProcess] = []
    try:
        client = make_client(first.url)
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"s{i}", "params": simple_params(f"slow {i}")} for i in range(3)]
        )
        leases = "SELECT idx, lease_owner, attempts FROM batch_requests WHERE state = 1 ORDER BY idx"
        until(lambda: len(query(url, leases)) == 3, what="the first engine to claim the batch")
        held = query(url, leases)

        for command in ("serve", "worker"):
            second = ServerProcess(url, config_text=SLOW, workdir=tmp_path, command=command)
            others.append(second)
            second.start(wait=False)
            assert second.wait_exit() == 1
            log = second.log()
            assert f"another batchyard engine (pid {first.proc.pid}) is already running on the SQLite database" in log
            assert "--no-engine" in log and "PostgreSQL" in log
        assert query(url, leases) == held  # nothing released, nothing stolen

        api = ServerProcess(url, config_text=SLOW, workdir=tmp_path, extra_args=["--no-engine"])
        others.append(api)
        api.start()  # an API-only process is welcome
        assert make_client(api.url).messages.batches.retrieve(batch.id).processing_status == "in_progress"

        first.kill()  # the operating system frees the lock with the process
        replacement = ServerProcess(url, config_text=SLOW, workdir=tmp_path)
        others.append(replacement)
        replacement.start()
        ended = wait_for_end(make_client(replacement.url), batch.id, timeout=60)
        assert ended.request_counts.succeeded == 3
    finally:
        for proc in [first, *others]:
            proc.stop()


CRASHING = """
[engine]
lease = 2
sweep_interval = 0.3

[[models]]
id = "*"
backend = "simulator"
latency_ms = 50
crash_marker = "POISON"
"""


def test_a_line_that_crashes_its_worker_ends_errored(tmp_path: Path, fresh_database_url: str) -> None:
    """The poison line takes the server down each time it runs. Restarted by a supervisor
    (this test), the server gives up on that line after three lost workers; its
    neighbours, caught in the first crashes, finish."""
    proc = ServerProcess(fresh_database_url, config_text=CRASHING, workdir=tmp_path).start()
    deaths = 0
    try:
        client = make_client(proc.url)
        texts = [f"line {i}" if i != 3 else "this line is POISON" for i in range(10)]
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"l{i}", "params": simple_params(t)} for i, t in enumerate(texts)]
        )
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "the batch did not end"
            if not proc.alive():
                deaths += 1
                assert deaths <= 3, "the poison line was run after its third lost worker"
                proc.start(wait=False)  # it may crash again before it is even ready
                continue
            try:
                if client.messages.batches.retrieve(batch.id).processing_status == "ended":
                    break
            except anthropic.APIConnectionError:
                pass  # starting, or just died
            time.sleep(0.1)
        results = {line.custom_id: line.result for line in client.messages.batches.results(batch.id)}
        assert deaths == 3
        poisoned = results.pop("l3")
        assert poisoned.type == "errored"
        assert poisoned.error.error.type == "api_error"
        assert poisoned.error.error.message == lease_lost_message(3)
        assert {r.type for r in results.values()} == {"succeeded"}
    finally:
        proc.stop()


def test_cancel_stops_a_batch_whose_requests_are_all_in_flight(server: ServerProcess) -> None:
    """400 requests on a 1-second backend, all sent to it at once, canceled at once: the
    calls in flight are stopped and end canceled (not 400 succeeded a second later)."""
    client = make_client(server.url)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"c{i}", "params": simple_params(f"cancel {i}", model="second-model")} for i in range(400)]
    )
    canceled = client.messages.batches.cancel(batch.id)
    assert canceled.processing_status in ("canceling", "ended")
    ended = wait_for_end(client, batch.id, timeout=30)
    assert ended.request_counts.canceled >= 360, ended.request_counts
    assert ended.request_counts.canceled + ended.request_counts.succeeded == 400
    with raw(server.url) as http:
        lines = [orjson.loads(line) for line in http.get(f"/v1/messages/batches/{batch.id}/results").content.splitlines()]
    assert sum(1 for line in lines if line["result"] == {"type": "canceled"}) == ended.request_counts.canceled
    # Measured from the server's own timestamps: reported, and bounded loosely here.
    assert (ended.ended_at - canceled.cancel_initiated_at).total_seconds() < 10
