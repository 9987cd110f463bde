"""Every SQL statement about files: their metadata (``FileStore``) and their bytes
(``DatabaseBlobs``, one implementation of :class:`Blobs`).

The split is the seam for a second home for the bytes: metadata stays in the database
(listing, workspace isolation, quotas and expiry are queries), while the bytes go through
the four methods of :class:`Blobs`. An S3-compatible object store would implement them
with a multipart upload per file (``append`` buffers to the 5 MiB part minimum and sends
parts, ``commit`` completes the upload, ``delete`` aborts or removes it) and a ranged GET
per ``read``; nothing above this module would change (docs/architecture.md).

A file's life in SQL: ``begin`` inserts its row as UPLOADING, invisible to every query of
the API; its bytes arrive in short transactions of one chunk each (so SQLite's single
writer is never held while a client takes its time to send); ``commit`` makes it READY in
one transaction that also checks the workspace's quota. A process killed mid-upload
leaves an UPLOADING row that nothing shows, and ``abandoned`` finds it for the sweeper.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from .database import Database
from .schema import FileState, file_chunks, files

F = files
C = file_chunks

CHUNK_BYTES = 1024 * 1024  # bytes per chunk row: small enough to hold a few, large enough to be few
READ_AHEAD = 4  # chunks fetched per query while streaming a file out
QUOTA_LOCK_SPACE = 0x6279666C  # "byfl": advisory locks (space, workspace hash) for storage quotas


@dataclass(slots=True)
class FileRecord:
    id: str
    workspace_id: str
    filename: str
    mime_type: str
    purpose: str
    size_bytes: int
    chunks: int
    state: int
    downloadable: bool
    created_at: int
    expires_at: int | None
    touched_at: int

    @classmethod
    def from_row(cls, row: Any) -> FileRecord:
        values = dict(row._mapping)
        values["downloadable"] = bool(values["downloadable"])
        return cls(**values)

    @property
    def expired(self) -> bool:
        return self.state == FileState.EXPIRED


class QuotaExceeded(Exception):
    """The workspace's stored bytes plus this file would pass its cap."""

    def __init__(self, used: int, adding: int, limit: int) -> None:
        super().__init__(f"{used} stored + {adding} > {limit}")
        self.used, self.adding, self.limit = used, adding, limit


_COLUMNS = [c for c in F.c]
_VISIBLE = F.c.state.in_([int(FileState.READY), int(FileState.EXPIRED)])


class Blobs:
    """Where a file's bytes live. ``append`` is called with ``seq`` 0, 1, 2 ... in order,
    each chunk at most CHUNK_BYTES; ``read`` yields them back in order."""

    async def append(self, file_id: str, seq: int, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def commit(self, file_id: str, chunks: int) -> None:
        """All ``chunks`` are written (a no-op where each append is durable at once)."""

    def read(self, file_id: str, chunks: int) -> AsyncIterator[bytes]:  # pragma: no cover - interface
        raise NotImplementedError

    async def delete(self, file_id: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class BlobMissing(Exception):
    """Fewer chunks came back than the file has: it was deleted or expired mid-read."""


class DatabaseBlobs(Blobs):
    """Bytes as ``file_chunks`` rows in the same database (the default: a PostgreSQL
    deployment needs nothing else, and every process sees every file)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, file_id: str, seq: int, data: bytes) -> None:
        async with self.db.write() as conn:
            await conn.execute(insert(C).values(file_id=file_id, seq=seq, data=data))

    async def read(self, file_id: str, chunks: int) -> AsyncIterator[bytes]:
        """The chunks in order, a few per query: no read transaction stays open while
        the client reads, and at most READ_AHEAD chunks are in memory."""
        seq = 0
        while seq < chunks:
            query = (
                select(C.c.seq, C.c.data)
                .where(C.c.file_id == file_id, C.c.seq >= seq)
                .order_by(C.c.seq)
                .limit(min(READ_AHEAD, chunks - seq))
            )
            async with self.db.read() as conn:
                rows = (await conn.execute(query)).all()
            if not rows:
                raise BlobMissing(file_id)
            for row in rows:
                if row.seq != seq:
                    raise BlobMissing(file_id)
                seq += 1
                yield bytes(row.data)

    async def delete(self, file_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(C).where(C.c.file_id == file_id))


class FileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def begin(self, record: FileRecord) -> None:
        """Insert a file's row as UPLOADING (seen by nothing but its upload and the sweeper)."""
        values = {name: getattr(record, name) for name in FileRecord.__slots__}
        values["state"] = int(FileState.UPLOADING)
        async with self.db.write() as conn:
            await conn.execute(insert(F).values(**values))

    async def touch(self, file_id: str, now: int) -> None:
        """An upload still in progress: not abandoned."""
        async with self.db.write() as conn:
            await conn.execute(
                update(F).where(F.c.id == file_id, F.c.state == FileState.UPLOADING).values(touched_at=now)
            )

    async def commit(self, record: FileRecord, quota: int | None) -> bool:
        """Make an upload READY with its final metadata (name, type, purpose, size, expiry),
        unless the workspace's ready files plus this one would pass ``quota``
        (QuotaExceeded). False: the row was no longer uploading (swept as abandoned)."""
        async with self.db.write() as conn:
            if quota is not None:
                if self.db.is_postgres:
                    # Commits in one workspace take turns, so two cannot each miss the
                    # other's bytes and both pass.
                    await conn.execute(
                        select(func.pg_advisory_xact_lock(QUOTA_LOCK_SPACE, func.hashtext(record.workspace_id)))
                    )
                used = (
                    await conn.execute(
                        select(func.coalesce(func.sum(F.c.size_bytes), 0)).where(
                            F.c.workspace_id == record.workspace_id, F.c.state == FileState.READY
                        )
                    )
                ).scalar_one()
                if used + record.size_bytes > quota:
                    raise QuotaExceeded(int(used), record.size_bytes, quota)
            result = await conn.execute(
                update(F)
                .where(F.c.id == record.id, F.c.state == FileState.UPLOADING)
                .values(
                    state=int(FileState.READY),
                    filename=record.filename,
                    mime_type=record.mime_type,
                    purpose=record.purpose,
                    downloadable=record.downloadable,
                    expires_at=record.expires_at,
                    size_bytes=record.size_bytes,
                    chunks=record.chunks,
                )
            )
            if result.rowcount == 1:
                record.state = int(FileState.READY)
            return result.rowcount == 1

    async def remove(self, file_id: str) -> None:
        """Drop a file's row (its bytes go first, through Blobs)."""
        async with self.db.write() as conn:
            await conn.execute(delete(F).where(F.c.id == file_id))

    async def get(self, workspace_id: str, file_id: str) -> FileRecord | None:
        """A ready or expired file of this workspace; None for any other."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(F.c.id == file_id, F.c.workspace_id == workspace_id, _VISIBLE)
                )
            ).first()
        return None if row is None else FileRecord.from_row(row)

    async def list(
        self,
        workspace_id: str,
        limit: int,
        *,
        after_id: str | None = None,
        before_id: str | None = None,
        ascending: bool = False,
        purpose: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> tuple[list[FileRecord], bool]:
        """One page in id (creation) order, newest first unless ``ascending``.
        ``after_id``: the page just past it in that order; ``before_id``: the page just
        before it. Returns the page and whether more lie beyond it."""
        query = select(*_COLUMNS).where(F.c.workspace_id == workspace_id, _VISIBLE)
        if purpose is not None:
            query = query.where(F.c.purpose == purpose)
        if ids is not None:
            query = query.where(F.c.id.in_(list(ids)))
        if after_id is not None:
            query = query.where(F.c.id > after_id if ascending else F.c.id < after_id)
        if before_id is not None:
            query = query.where(F.c.id < before_id if ascending else F.c.id > before_id)
        backwards = before_id is not None and after_id is None
        forward_asc = ascending != backwards
        query = query.order_by(F.c.id.asc() if forward_asc else F.c.id.desc()).limit(limit + 1)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        has_more = len(rows) > limit
        page = list(rows[:limit])
        if backwards:
            page.reverse()
        return [FileRecord.from_row(r) for r in page], has_more

    async def named(self, workspace_id: str, purpose: str, filenames: Sequence[str]) -> builtins.list[str]:
        """Ids of the visible files of a workspace with this purpose and one of these names."""
        query = select(F.c.id).where(
            F.c.workspace_id == workspace_id, F.c.purpose == purpose, F.c.filename.in_(list(filenames)), _VISIBLE
        )
        async with self.db.read() as conn:
            return [row.id for row in await conn.execute(query)]

    async def hide(self, workspace_id: str, file_id: str) -> FileRecord | None:
        """The first step of a delete: the file leaves every listing and lookup at once
        (its row goes back to UPLOADING with an old stamp, which the sweeper also clears
        if this process dies before the bytes are gone). Returns the file, or None."""
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    update(F)
                    .where(F.c.id == file_id, F.c.workspace_id == workspace_id, _VISIBLE)
                    .values(state=int(FileState.UPLOADING), touched_at=0)
                    .returning(*_COLUMNS)
                )
            ).first()
        return None if row is None else FileRecord.from_row(row)

    async def usage(self, workspace_id: str) -> int:
        async with self.db.read() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.coalesce(func.sum(F.c.size_bytes), 0)).where(
                            F.c.workspace_id == workspace_id, F.c.state == FileState.READY
                        )
                    )
                ).scalar_one()
            )

    # -- sweeps ------------------------------------------------------------------------

    async def abandoned(self, touched_before: int, limit: int = 100) -> builtins.list[str]:
        """Uploads (and deletes) nobody has advanced since ``touched_before``."""
        query = (
            select(F.c.id)
            .where(F.c.state == FileState.UPLOADING, F.c.touched_at < touched_before)
            .order_by(F.c.touched_at)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [r.id for r in await conn.execute(query)]

    async def due_to_expire(self, now: int, limit: int = 100) -> builtins.list[str]:
        query = (
            select(F.c.id)
            .where(F.c.state == FileState.READY, F.c.expires_at.is_not(None), F.c.expires_at <= now)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [r.id for r in await conn.execute(query)]

    async def mark_expired(self, file_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(F).where(F.c.id == file_id, F.c.state == FileState.READY).values(state=int(FileState.EXPIRED))
            )

    async def forget_expired(self, expired_before: int) -> int:
        """Drop the metadata of files expired before the cutoff (their bytes are gone)."""
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(F).where(F.c.state == FileState.EXPIRED, F.c.expires_at <= expired_before)
            )
            return result.rowcount
