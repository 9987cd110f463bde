"""The file lifecycle in-process on both databases: server-made files streamed in and out
(what the Batch API's output and input files use), expiry, and the quota under
concurrent uploads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from batchyard.config import FileLimits, Settings
from batchyard.files import Files
from batchyard.protocol.files import FileExpired, FileNotFound, StorageQuotaExceeded
from batchyard.store import migrate
from batchyard.store.database import Database, parse_database_url
from batchyard.store.files import CHUNK_BYTES, DatabaseBlobs, FileStore
from support.databases import query

MiB = 1024 * 1024


async def _open(url: str, **limits: object) -> tuple[Database, Files]:
    db = Database(parse_database_url(url))
    await migrate.upgrade(db)
    settings = Settings(database_url=url, files=FileLimits(**limits))
    return db, Files(FileStore(db), DatabaseBlobs(db), settings)


async def _stream(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def test_server_made_files_stream_in_and_out(fresh_database_url: str) -> None:
    lines = [b'{"custom_id": "r%d", "response": {"status_code": 200}}' % i for i in range(30_000)]
    data = b"\n".join(lines) + b"\n"

    async def scenario() -> None:
        db, files = await _open(fresh_database_url)
        try:
            # Odd piece sizes: chunking is the store's business, not the writer's.
            pieces = [data[i : i + 77_777] for i in range(0, len(data), 77_777)]
            record = await files.write("ws1", "batch_output.jsonl", "batch_output", "application/jsonl", _stream(pieces))
            assert record.size_bytes == len(data) and record.downloadable and record.chunks == -(-len(data) // CHUNK_BYTES)
            assert (await files.get("ws1", record.id)).purpose == "batch_output"
            content = await files.open("ws1", record.id)
            assert [line async for line in content.lines()] == lines
            assert await (await files.download("ws1", record.id)).read_all() == data
            with pytest.raises(FileNotFound):
                await files.open("ws2", record.id)
        finally:
            await db.close()

    asyncio.run(scenario())


def test_expiry_keeps_the_metadata_and_drops_the_bytes(fresh_database_url: str) -> None:
    async def scenario() -> None:
        db, files = await _open(fresh_database_url, forget_expired_after=3600)
        try:
            record = await files.write("ws", "short.txt", "user_data", "text/plain", _stream([b"x" * (2 * MiB)]), ttl=0.2)
            deadline = time.monotonic() + 10
            while True:  # past expires_at, the content is refused before any sweep runs
                try:
                    await files.open("ws", record.id)
                except FileExpired:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await files.sweep()
            async with db.read() as conn:
                left = (await conn.execute(text("SELECT count(*) FROM file_chunks WHERE file_id = :f"), {"f": record.id})).scalar()
            assert left == 0
            assert (await files.get("ws", record.id)).expired  # still listed, as the real API does
            await files.sweep(now=record.expires_at + 3600 * 1_000_000 + 1)
            with pytest.raises(FileNotFound):
                await files.get("ws", record.id)
        finally:
            await db.close()

    asyncio.run(scenario())


def test_concurrent_uploads_cannot_both_pass_the_quota(fresh_database_url: str) -> None:
    async def scenario() -> list[object]:
        db, files = await _open(fresh_database_url, max_workspace_bytes=5 * MiB)
        try:
            async def one(name: str) -> object:
                try:
                    return await files.write("ws", name, "user_data", None, _stream([b"q" * MiB] * 3))
                except StorageQuotaExceeded as exc:
                    return exc

            return await asyncio.gather(*(one(f"f{i}") for i in range(4)))
        finally:
            await db.close()

    outcomes = asyncio.run(scenario())
    stored = [o for o in outcomes if not isinstance(o, StorageQuotaExceeded)]
    assert len(stored) == 1  # 3 MiB each under a 5 MiB cap: exactly one fits
    assert query(fresh_database_url, "SELECT count(*), sum(size_bytes) FROM files") == [(1, 3 * MiB)]
    assert query(fresh_database_url, "SELECT count(*) FROM file_chunks") == [(3,)]
