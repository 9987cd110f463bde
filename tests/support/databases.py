"""Databases for tests: a SQLite file, or a PostgreSQL database of the test run's own on the
real server (127.0.0.1:5432 unless BATCHYARD_TEST_POSTGRES says otherwise), dropped after.

A PostgreSQL that cannot be reached fails the tests that need it; nothing is skipped."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import asyncpg

ADMIN_URL = os.environ.get("BATCHYARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgresql"]


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def create_postgres_database() -> str:
    name = f"batchyard_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"PostgreSQL tests need a server at {ADMIN_URL} (start it: pg_ctlcluster --skip-systemctl-redirect "
            f"$(ls /etc/postgresql) main start): {exc}"
        ) from exc
    return _with_database(ADMIN_URL, name)


def drop_postgres_database(url: str) -> None:
    name = url.rpartition("/")[2]

    async def drop() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def new_database(kind: str, directory: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{directory / f'batchyard-{uuid.uuid4().hex[:8]}.db'}"
    return create_postgres_database()


def dispose(url: str) -> None:
    if url.startswith("postgresql"):
        drop_postgres_database(url)


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement against a test database; placeholders are $1, $2, ..."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            lite_sql = sql
            for i in range(len(params), 0, -1):
                lite_sql = lite_sql.replace(f"${i}", "?")
            return [tuple(row) for row in conn.execute(lite_sql, params).fetchall()]

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return [tuple(row) for row in await conn.fetch(sql, *params)]
        finally:
            await conn.close()

    return asyncio.run(run())
