"""The ``batchyard`` command itself: refusing bad configs and foreign schemas, migrating."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from support.server import free_port


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "batchyard", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_serve_refuses_a_bad_config_naming_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[models]]\nid = "*"\nbackend = "simulator"\nlatency = 5\n')
    done = run_cli("serve", "--port", str(free_port()), "--config", str(config), cwd=tmp_path)
    assert done.returncode != 0
    assert f"{config}:4: models[0].latency: unknown option for backend 'simulator'" in done.stderr
    assert "Traceback" not in done.stderr


def test_config_from_environment_is_checked_too(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[models]]\nid = "*"\nbackend = "gpt-in-a-box"\n')
    done = run_cli("serve", "--port", str(free_port()), cwd=tmp_path, env={"BATCHYARD_CONFIG": str(config)})
    assert done.returncode != 0
    assert f"{config}:3: models[0].backend: unknown backend 'gpt-in-a-box'" in done.stderr


def test_db_upgrade_creates_the_schema_and_default_path(tmp_path: Path) -> None:
    done = run_cli("db", "upgrade", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "batchyard.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"batches", "batch_requests", "alembic_version"} <= tables
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_serve_refuses_a_schema_newer_than_it_knows(tmp_path: Path) -> None:
    assert run_cli("db", "upgrade", cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "batchyard.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    done = run_cli("serve", "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode != 0
    assert "schema is at revision '9999_from_the_future', newer than this batchyard knows" in done.stderr


def test_unsupported_database_url(tmp_path: Path) -> None:
    done = run_cli("db", "upgrade", "--database", "mysql://localhost/x", cwd=tmp_path)
    assert done.returncode != 0
    assert "unsupported database 'mysql'" in done.stderr
