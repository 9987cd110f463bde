"""Shared fixtures: real servers in child processes, the official SDK as the client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from support.databases import BACKENDS, dispose, new_database
from support.helpers import make_client
from support.server import ServerProcess

MAIN_CONFIG = """
[engine]
lease = 10

[limits]
stream_ping_interval = 0.1

[[models]]
id = "slow-model"
backend = "simulator"
latency_ms = 300
max_concurrency = 2

[[models]]
id = "second-model"
backend = "simulator"
latency_ms = 1000

[[models]]
id = "flaky-model"
backend = "simulator"
error_rate = 0.5
max_attempts = 1

[[models]]
id = "capped-model"
backend = "simulator"
max_tokens = 64

[[models]]
id = "claude-sim"
backend = "simulator"
display_name = "Claude Simulated"
created_at = "2026-01-15T00:00:00Z"
max_input_tokens = 200000

[[models]]
id = "broken-model"
backend = "simulator"
error_rate = 1.0
error_types = ["overloaded_error"]
max_attempts = 1

[[models]]
id = "api-error-model"
backend = "simulator"
error_rate = 1.0
error_types = ["api_error"]
max_attempts = 1

[[models]]
id = "midstream-model"
backend = "simulator"
stream_error_rate = 1.0

[[models]]
id = "dripping-model"
backend = "simulator"
token_latency_ms = 250

[[models]]
id = "sim-*"
backend = "simulator"
"""


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The main test server's database: the whole integration suite runs on both."""
    url = new_database(request.param, tmp_path_factory.mktemp("db"))
    yield url
    dispose(url)


@pytest.fixture(params=BACKENDS)
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own, on each backend."""
    url = new_database(request.param, tmp_path)
    yield url
    dispose(url)


@pytest.fixture(scope="session")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(database_url, config_text=MAIN_CONFIG, workdir=tmp_path_factory.mktemp("server"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> anthropic.Anthropic:
    return make_client(server.url)
