"""Helpers for tests that drive a real server with the official SDK."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx


def batch_routes(batch_id: str) -> tuple[tuple[str, str], ...]:
    """Every route that names one batch, as (method, path)."""
    return (
        ("GET", f"/v1/messages/batches/{batch_id}"),
        ("POST", f"/v1/messages/batches/{batch_id}/cancel"),
        ("DELETE", f"/v1/messages/batches/{batch_id}"),
        ("GET", f"/v1/messages/batches/{batch_id}/results"),
    )


def make_client(url: str, **kwargs: object) -> anthropic.Anthropic:
    options: dict[str, object] = {"api_key": "test-key", "max_retries": 0, "_strict_response_validation": True}
    return anthropic.Anthropic(base_url=url, **{**options, **kwargs})


HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}


def raw(server_url: str) -> httpx.Client:
    """A plain HTTP client with the classic headers, for checking bytes and headers."""
    return httpx.Client(base_url=server_url, headers=HEADERS, timeout=60)


def wait_for_end(client: anthropic.Anthropic, batch_id: str, timeout: float = 60.0) -> anthropic.types.messages.MessageBatch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} did not end in {timeout}s: {batch}")
        time.sleep(0.1)


def simple_params(text: str = "Hello there", model: str = "claude-sim", **extra: object) -> dict[str, object]:
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}




def wait_until(condition: object, timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll ``condition()`` until it is true (instead of sleeping and hoping)."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def finished_rows(database_url: str, batch_id: str) -> int:
    """Requests of a batch that succeeded so far (read from the database)."""
    from support.databases import query

    return query(database_url, "SELECT count(*) FROM batch_requests WHERE batch_id = $1 AND state = 2", batch_id)[0][0]


def make_key(workspace: str, database_url: str, cwd: Path) -> str:
    """A new API key of a workspace, made with the CLI (``batchyard keys create``)."""
    done = subprocess.run(
        [sys.executable, "-m", "batchyard", "keys", "create", "--workspace", workspace, "--database", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# For tests that kill -9 servers mid-batch: short leases, a quick sweep, no shutdown grace.
# Ten kills may catch the same line running three times: with the default of three lost
# workers that line would rightly end as a poison line. These tests are about nothing lost
# and nothing twice, so no line here can reach the limit (poison lines: test_engine.py).
def make_admin_key(database_url: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "batchyard", "keys", "create", "--admin", "--name", "ops", "--database", database_url],
        capture_output=True, text=True, timeout=60, cwd=cwd, env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("sk-by-admin-")
    return secret


def admin_client(url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, _strict_response_validation=True)


KILL_CONFIG = """
[engine]
lease = 2
sweep_interval = 0.3
shutdown_grace = 0
max_lease_losses = 11

[[models]]
id = "*"
backend = "simulator"
latency_ms = 100
max_concurrency = 50
"""
