"""Keys, workspaces, rate limits and hostile input: no one gets in where they don't belong.

Two workspaces, each with two keys, attack each other's batches on every endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from support.databases import BACKENDS, dispose, new_database, query
from support.helpers import batch_routes, make_client, simple_params, wait_for_end
from support.server import ServerProcess, free_port

CONFIG = """
[limits]
header_timeout = 1
body_timeout = 1

[rate_limits.workspaces.tiny]
requests_per_minute = 5

[rate_limits.workspaces.queue]
max_queued_requests = 3

[rate_limits.workspaces.race]
max_queued_requests = 4

[[models]]
id = "slow-model"
backend = "simulator"
latency_ms = 400
max_concurrency = 1

[[models]]
id = "stuck-model"
backend = "simulator"
latency_ms = 600000
max_concurrency = 1

[[models]]
id = "*"
backend = "simulator"
"""


def cli(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchyard", *args, "--database", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ},
    )


def make_key(workspace: str, database_url: str, cwd: Path, name: str = "") -> str:
    done = cli("keys", "create", "--workspace", workspace, *(["--name", name] if name else []), database_url=database_url, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class Tenancy:
    server: ServerProcess
    database_url: str
    workdir: Path
    keys: dict[str, str]

    def http(self, key: str | None, **headers: str) -> httpx.Client:
        base = {"anthropic-version": "2023-06-01", **headers}
        if key is not None:
            base["x-api-key"] = key
        return httpx.Client(base_url=self.server.url, headers=base, timeout=30)


@pytest.fixture(scope="module", params=BACKENDS)
def tenancy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenancy]:
    workdir = tmp_path_factory.mktemp("tenancy")
    url = new_database(request.param, workdir)
    keys = {
        "a1": make_key("alpha", url, workdir, "first"),
        "a2": make_key("alpha", url, workdir, "second"),
        "b1": make_key("beta", url, workdir),
        "b2": make_key("beta", url, workdir),
        "t1": make_key("tiny", url, workdir),
        "q1": make_key("queue", url, workdir),
        "r1": make_key("race", url, workdir),
    }
    server = ServerProcess(url, config_text=CONFIG, workdir=workdir)
    server.start()
    yield Tenancy(server, url, workdir, keys)
    server.stop()
    dispose(url)


def batch_of(n: int, model: str = "claude-sim") -> dict[str, object]:
    return {"requests": [{"custom_id": f"r{i}", "params": simple_params(f"q {i}", model=model)} for i in range(n)]}


def test_keys_look_right_and_are_stored_only_as_hashes(tenancy: Tenancy) -> None:
    for key in tenancy.keys.values():
        assert key.startswith("sk-by-") and len(key) >= 6 + 43
    rows = query(tenancy.database_url, "SELECT id, workspace_id, name, prefix, secret_hash FROM api_keys")
    dump = repr(rows)
    for key in tenancy.keys.values():
        assert key not in dump
        assert key[6:] not in dump  # not even without its prefix
    listed = cli("keys", "list", "--json", database_url=tenancy.database_url, cwd=tenancy.workdir)
    entries = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert {e["workspace"] for e in entries} >= {"alpha", "beta", "tiny", "queue"}
    assert all(e["status"] == "active" and e["prefix"].endswith("...") for e in entries)


def test_missing_and_wrong_keys(tenancy: Tenancy) -> None:
    with tenancy.http(None) as http:
        missing = http.get("/v1/messages/batches")
    assert missing.status_code == 401
    assert missing.json()["error"] == {"type": "authentication_error", "message": "x-api-key header is required"}
    assert missing.headers["x-should-retry"] == "false"
    for bad in ("sk-by-not-a-real-key", "", "x" * 5000, tenancy.keys["a1"] + "x"):
        with tenancy.http(bad or None) as http:
            response = http.get("/v1/messages/batches")
        assert response.status_code == 401
        assert response.headers["x-should-retry"] == "false"
        if bad:
            assert response.json()["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
            assert bad not in response.text  # never echoed
    bearer = httpx.get(
        f"{tenancy.server.url}/v1/messages/batches",
        headers={"authorization": f"Bearer {tenancy.keys['b1']}", "anthropic-version": "2026-10-21"},
    )
    assert bearer.status_code == 200
    assert make_client(tenancy.server.url, api_key=tenancy.keys["b1"]).messages.batches.list().data is not None


def test_workspaces_cannot_see_or_touch_each_other(tenancy: Tenancy) -> None:
    a1 = make_client(tenancy.server.url, api_key=tenancy.keys["a1"])
    finished = a1.messages.batches.create(**batch_of(2))
    wait_for_end(a1, finished.id)
    running = a1.messages.batches.create(**batch_of(3, model="slow-model"))
    for attacker in ("b1", "b2"):
        with tenancy.http(tenancy.keys[attacker]) as http:
            for batch_id in (finished.id, running.id):
                for method, path in batch_routes(batch_id):
                    response = http.request(method, path)
                    assert response.status_code == 404, (attacker, method, path, response.text)
                    assert response.json()["error"] == {
                        "type": "not_found_error",
                        "message": f"Message Batch {batch_id} not found.",
                    }
            listed = http.get("/v1/messages/batches", params={"limit": 1000}).json()
            assert not {finished.id, running.id} & {b["id"] for b in listed["data"]}
            # Cursors from the other workspace reveal nothing either.
            around = http.get("/v1/messages/batches", params={"after_id": running.id, "limit": 1000}).json()
            assert finished.id not in {b["id"] for b in around["data"]}
    # Untouched by all of that, and visible to the workspace's other key.
    a2 = make_client(tenancy.server.url, api_key=tenancy.keys["a2"])
    assert a2.messages.batches.retrieve(running.id).processing_status == "in_progress"
    assert a2.messages.batches.retrieve(finished.id).request_counts.succeeded == 2
    assert len(list(a2.messages.batches.results(finished.id))) == 2
    a2.messages.batches.cancel(running.id)
    wait_for_end(a2, running.id)


def test_workspace_header_must_match_the_key(tenancy: Tenancy) -> None:
    with tenancy.http(tenancy.keys["a1"]) as http:
        workspace_id = query(
            tenancy.database_url, "SELECT id FROM workspaces WHERE name = $1", "alpha"
        )[0][0]
        assert http.get("/v1/messages/batches", headers={"anthropic-workspace-id": workspace_id}).status_code == 200
        other = query(tenancy.database_url, "SELECT id FROM workspaces WHERE name = $1", "beta")[0][0]
        refused = http.get("/v1/messages/batches", headers={"anthropic-workspace-id": other})
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "type": "permission_error",
        "message": "anthropic-workspace-id does not match the workspace of this API key",
    }


def test_disabled_key_stops_working_and_rotation_keeps_the_batch(tenancy: Tenancy) -> None:
    rotating = make_key("alpha", tenancy.database_url, tenancy.workdir, "rotating")
    client = make_client(tenancy.server.url, api_key=rotating)
    batch = client.messages.batches.create(**batch_of(3, model="slow-model"))
    key_id = next(
        orjson.loads(line)["id"]
        for line in cli("keys", "list", "--json", database_url=tenancy.database_url, cwd=tenancy.workdir).stdout.splitlines()
        if orjson.loads(line)["name"] == "rotating"
    )
    with tenancy.http(rotating) as http:  # the server's cached check of this key is fresh now
        assert http.get("/v1/messages/batches").status_code == 200
    done = cli("keys", "disable", key_id, database_url=tenancy.database_url, cwd=tenancy.workdir)
    assert done.returncode == 0, done.stderr
    disabled_at = time.monotonic()
    # PostgreSQL: a notice clears every server's cache when the disable commits, so the key
    # is refused at once (the cache alone would keep it working ~5 s after the check above).
    # SQLite: within the cache's few seconds.
    within = 1.0 if tenancy.database_url.startswith("postgresql") else 10.0
    while True:
        with tenancy.http(rotating) as http:
            status = http.get("/v1/messages/batches").status_code
        if status == 401:
            break
        assert time.monotonic() - disabled_at < within, f"disabled key still accepted after {within} s"
        time.sleep(0.05)
    other = make_client(tenancy.server.url, api_key=tenancy.keys["a2"])
    ended = wait_for_end(other, batch.id)
    assert ended.request_counts.succeeded == 3
    assert len(list(other.messages.batches.results(batch.id))) == 3
    listed = [orjson.loads(line) for line in cli("keys", "list", "--json", database_url=tenancy.database_url, cwd=tenancy.workdir).stdout.splitlines()]
    assert next(e for e in listed if e["id"] == key_id)["status"] == "disabled"
    assert cli("keys", "disable", "key_nope", database_url=tenancy.database_url, cwd=tenancy.workdir).returncode != 0


def test_rate_limit_headers_and_429(tenancy: Tenancy) -> None:
    with tenancy.http(tenancy.keys["b2"]) as http:
        response = http.get("/v1/models")
    assert response.headers["anthropic-ratelimit-requests-limit"] == "6000"
    assert int(response.headers["anthropic-ratelimit-requests-remaining"]) <= 5999
    assert response.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    with tenancy.http(tenancy.keys["t1"]) as http:
        statuses = [http.get("/v1/models") for _ in range(6)]
    assert [r.status_code for r in statuses[:5]] == [200] * 5
    limited = statuses[5]
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert limited.headers["x-should-retry"] == "true"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert limited.headers["anthropic-ratelimit-requests-limit"] == "5"


def test_queued_requests_cap_per_workspace(tenancy: Tenancy) -> None:
    with tenancy.http(tenancy.keys["q1"]) as http:
        too_big = http.post("/v1/messages/batches", json=batch_of(4, model="slow-model"))
        assert too_big.status_code == 429, too_big.text
        assert too_big.json()["error"]["type"] == "rate_limit_error"
        assert "over its limit of 3" in too_big.json()["error"]["message"]
        assert too_big.headers["retry-after"] == "60"
        first = http.post("/v1/messages/batches", json=batch_of(2, model="slow-model"))
        assert first.status_code == 200, first.text
        second = http.post("/v1/messages/batches", json=batch_of(2, model="slow-model"))
        assert second.status_code == 429
    # Nothing of the refused batches was written.
    counts = query(
        tenancy.database_url,
        "SELECT count(*) FROM batches b JOIN workspaces w ON w.id = b.workspace_id WHERE w.name = $1",
        "queue",
    )
    assert counts == [(1,)]


def test_queued_requests_cap_holds_under_concurrent_creates(tenancy: Tenancy) -> None:
    # Twelve one-request batches at once against a cap of four, on a model that keeps them
    # queued: exactly four get in, whatever the interleaving.
    def create(_: int) -> int:
        with tenancy.http(tenancy.keys["r1"]) as http:
            return http.post("/v1/messages/batches", json=batch_of(1, model="stuck-model")).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(create, range(12)))
    assert sorted(statuses) == [200] * 4 + [429] * 8, statuses
    queued = query(
        tenancy.database_url,
        "SELECT coalesce(sum(b.request_count), 0) FROM batches b JOIN workspaces w ON w.id = b.workspace_id "
        "WHERE w.name = $1 AND b.processing_status != 'ended'",
        "race",
    )
    assert queued == [(4,)]


def test_hostile_bodies_are_refused_cleanly(tenancy: Tenancy) -> None:
    deep = b'{"model": "m", "max_tokens": 5, "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    huge_number = b'{"model": "m", "max_tokens": ' + b"9" * 100_000 + b', "messages": []}'
    bad_utf8 = b'{"model": "m\xff\xfe", "max_tokens": 5, "messages": []}'
    with tenancy.http(tenancy.keys["b1"]) as http:
        for path in ("/v1/messages", "/v1/messages/count_tokens", "/v1/messages/batches"):
            for body, fragment in ((deep, "The request body is not valid JSON"), (bad_utf8, "The request body is not valid JSON"), (huge_number, "")):
                response = http.post(path, content=body, headers={"content-type": "application/json"})
                assert response.status_code == 400, (path, response.text[:300])
                assert response.json()["error"]["type"] == "invalid_request_error"
                assert fragment in response.json()["error"]["message"]


def _raw_exchange(port: int, payload: bytes, pause_after: float, more: bytes = b"") -> tuple[bytes, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        time.sleep(pause_after)
        try:
            if more:
                sock.sendall(more)
        except OSError:
            pass
        reply = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            reply += chunk
    return reply, time.monotonic() - started


def test_slow_clients_time_out(tenancy: Tenancy) -> None:
    # Headers dribbling in: cut off after header_timeout (1 s here).
    reply, took = _raw_exchange(tenancy.server.port, b"GET /v1/messages/batches HTTP/1.1\r\nhost: x\r\n", 3.0, b"x-api-key: k\r\n")
    assert reply.startswith(b"HTTP/1.1 408")
    assert b"Request headers were not received in time" in reply
    # A connection that says nothing at all is closed too.
    reply, took = _raw_exchange(tenancy.server.port, b"", 3.0)
    assert reply.startswith(b"HTTP/1.1 408")
    # A body that stops arriving: 408 after body_timeout (1 s here).
    head = (
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"x-api-key: {tenancy.keys['b1']}\r\nanthropic-version: 2023-06-01\r\ncontent-length: 500\r\n\r\n"
    ).encode()
    reply, took = _raw_exchange(tenancy.server.port, head + b'{"model": "m"', 3.0)
    assert reply.startswith(b"HTTP/1.1 408")
    assert b"The request body was not received in time" in reply


def test_secrets_never_reach_the_logs(tenancy: Tenancy) -> None:
    with tenancy.http("sk-by-leaked-guess") as http:
        http.get("/v1/messages/batches")
    with tenancy.http(tenancy.keys["b1"]) as http:
        http.post(
            "/v1/messages/batches",
            json={"requests": [{"custom_id": "evil\r\ncontent-disposition: x", "params": {}}]},
        )
    log = tenancy.server.log()
    for key in [*tenancy.keys.values(), "sk-by-leaked-guess"]:
        assert key not in log


def test_open_mode_refuses_public_bind(tmp_path: Path) -> None:
    port = free_port()
    refused = subprocess.run(
        [sys.executable, "-m", "batchyard", "serve", "--host", "0.0.0.0", "--port", str(port),
         "--database", f"sqlite:///{tmp_path / 'open.db'}"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert refused.returncode != 0
    assert "refusing to listen on 0.0.0.0 in open mode" in refused.stderr
    allowed = ServerProcess(
        f"sqlite:///{tmp_path / 'open.db'}", workdir=tmp_path, host="0.0.0.0", extra_args=["--insecure-open"]
    )
    allowed.start()
    try:
        assert "OPEN MODE" in allowed.log()
    finally:
        allowed.stop()


def test_require_keys_without_any_key(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path / 'req.db'}", workdir=tmp_path, extra_args=["--require-keys"])
    server.start()
    try:
        response = httpx.get(f"{server.url}/v1/messages/batches", headers={"x-api-key": "anything", "anthropic-version": "2023-06-01"})
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "invalid x-api-key"
    finally:
        server.stop()


def test_rate_limit_is_one_bucket_across_api_processes_on_postgresql(tmp_path: Path) -> None:
    # Two API processes behind a (here: round-robin by hand) load balancer, one key of
    # workspace "tiny" (5 requests a minute): together they allow 5, not 5 each, and the
    # remaining count goes down across them. One token refills every 12 s; the ten
    # requests take well under that.
    url = new_database("postgresql", tmp_path)
    servers: list[ServerProcess] = []
    try:
        key = make_key("tiny", url, tmp_path)
        servers = [ServerProcess(url, config_text=CONFIG, workdir=tmp_path, extra_args=["--no-engine"]).start() for _ in range(2)]
        answers = []
        for i in range(10):
            with httpx.Client(base_url=servers[i % 2].url, headers={"anthropic-version": "2023-06-01", "x-api-key": key}) as http:
                answers.append(http.get("/v1/models"))
    finally:
        for server in servers:
            server.stop()
        dispose(url)
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 5
    assert [int(a.headers["anthropic-ratelimit-requests-remaining"]) for a in answers[:5]] == [4, 3, 2, 1, 0]
    refused = answers[5:]
    assert all(a.json()["error"]["type"] == "rate_limit_error" and int(a.headers["retry-after"]) >= 1 for a in refused)
