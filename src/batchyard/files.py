"""The file lifecycle, behind both Files APIs and every ``file_id`` in a message:

upload (uploading -> ready) -> (expire: bytes gone, metadata kept a while) -> delete

The API's routes call :meth:`Files.upload` (bytes streamed in, nothing visible until
:meth:`Upload.commit`), :meth:`Files.get`, :meth:`Files.list`, :meth:`Files.download` and
:meth:`Files.delete`. Server-side code (the OpenAI Batch API's output files) calls
:meth:`Files.write` with an async stream of bytes and reads input files with
:meth:`Files.open`. :meth:`Files.resolve` turns ``{"type": "file", "file_id"}`` sources
of document and image blocks into content a backend can take; interactive messages call
it before the backend, the engine when a batch line runs. SQL lives in ``store.files``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .config import Settings
from .protocol import files as wire
from .protocol.errors import ApiError, invalid_request
from .protocol.files import FileExpired, FileNotDownloadable, FileNotFound, FileTooLarge, StorageQuotaExceeded
from .protocol.ids import new_file_id
from .protocol.messages import DocumentBlock, FileSource, ImageBlock, ToolResultBlock, ValidatedRequest
from .protocol.timestamps import now_us, seconds_to_us
from .store.files import CHUNK_BYTES, Blobs, FileRecord, FileStore, QuotaExceeded
from .store.schema import FileState

log = logging.getLogger("batchyard.files")

TOUCH_EVERY_US = 5_000_000  # an upload in progress says so this often
SWEEP_LOCK_KEY = 0x62796673  # "byfs": one sweeper of files at a time across processes
RESOLVED_CACHE_BYTES = 64 * 1024 * 1024
SERVER_FILE_LIMIT = 1 << 40  # the server's own files (batch output) are as large as their results


@dataclass(frozen=True)
class FileTargets:
    """What a backend takes of a file's content: base64 PDFs as documents, base64 images."""

    pdf: bool
    images: bool


# By backend name. Backends that take neither get plain-text documents and PDFs as their
# text; images are refused for them with a clear message.
BACKEND_TARGETS: dict[str, FileTargets] = {
    "anthropic": FileTargets(pdf=True, images=True),
    "simulator": FileTargets(pdf=True, images=True),
    "openai": FileTargets(pdf=False, images=True),  # images as image_url data URLs
    "llamacpp": FileTargets(pdf=False, images=False),
}
TEXT_ONLY = FileTargets(pdf=False, images=False)


def targets_of(backend: Any) -> FileTargets:
    return BACKEND_TARGETS.get(getattr(backend, "name", ""), TEXT_ONLY)


class FileContent:
    """A file's bytes as an async iterator of chunks, with its record. Raises BlobMissing
    (mid-stream) if the file is deleted or expires while it is being read."""

    def __init__(self, record: FileRecord, chunks: AsyncIterator[bytes]) -> None:
        self.record = record
        self._chunks = chunks

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self._chunks])

    async def lines(self) -> AsyncIterator[bytes]:
        """The content split on ``\\n`` (an input JSONL file, line by line); one line in memory."""
        partial = b""
        async for chunk in self._chunks:
            parts = (partial + chunk).split(b"\n")
            partial = parts.pop()
            for line in parts:
                yield line
        if partial:
            yield partial


class Upload:
    """One file on its way in. Bytes go to the store as they arrive (``receive``); nothing
    is visible until ``commit``; ``abort`` (or any exception inside ``Files.upload``'s
    block) removes what was written."""

    def __init__(self, files: Files, record: FileRecord, limit: int) -> None:
        self.files = files
        self.record = record
        self.limit = limit
        self.received = False
        self.checked = False  # the JSONL check ran while the bytes streamed
        self.quota = True  # held to the workspace's storage quota (the server's own files are not)
        self._used: int | None = None

    async def receive(
        self,
        chunks: AsyncIterator[bytes],
        *,
        filename: str | None,
        declared_type: str | None,
        observe: Callable[[bytes], None] | None = None,
    ) -> None:
        """Store the file's bytes as they arrive, refusing the upload as soon as it passes
        its size limit or the workspace's quota. ``observe`` sees every piece (a check)."""
        if self.received:
            raise invalid_request("file: only one file may be uploaded per request")
        self.received = True
        record, store, blobs = self.record, self.files.store, self.files.blobs
        quota = (self.files.settings.files.max_workspace_bytes or None) if self.quota else None
        if quota is not None:
            self._used = await store.usage(record.workspace_id)
        buffer = bytearray()
        size = seq = 0
        last_touch = now_us()
        touch_every = min(TOUCH_EVERY_US, seconds_to_us(self.files.settings.files.abandoned_upload_after) // 3)
        head: bytes | None = None
        async for piece in chunks:
            size += len(piece)
            if size > self.limit:
                raise FileTooLarge(self.limit)
            if quota is not None and self._used is not None and self._used + size > quota:
                raise StorageQuotaExceeded(quota)
            if observe is not None:
                observe(piece)
            buffer += piece
            if head is None and len(buffer) >= 512:
                head = bytes(buffer[:512])
            while len(buffer) >= CHUNK_BYTES:
                await blobs.append(record.id, seq, bytes(buffer[:CHUNK_BYTES]))
                del buffer[:CHUNK_BYTES]
                seq += 1
            now = now_us()
            if now - last_touch > touch_every:
                await store.touch(record.id, now)
                last_touch = now
        if head is None:
            head = bytes(buffer[:512])
        if buffer:
            await blobs.append(record.id, seq, bytes(buffer))
            seq += 1
        record.size_bytes, record.chunks = size, seq
        record.mime_type = wire.sniff_mime(head, declared_type, filename)
        record.filename = wire.clean_filename(filename, record.mime_type)

    async def commit(
        self, *, purpose: str, downloadable: bool, ttl: float | None, check_jsonl: bool = False
    ) -> FileRecord:
        """Make the file visible. ``check_jsonl``: refuse it unless it is good Batch API
        JSONL (read back from the store when the check did not run while it streamed)."""
        record, settings = self.record, self.files.settings.files
        if not self.received:
            raise wire.missing_param("file")
        if check_jsonl:
            if record.size_bytes > settings.batch_max_bytes:
                raise FileTooLarge(settings.batch_max_bytes, "A purpose=batch file")
            if not self.checked:
                checker = self.files.jsonl_checker()
                async for chunk in self.files.blobs.read(record.id, record.chunks):
                    checker.feed(chunk)
                    if checker.done_badly:
                        break
                checker.finish()
                problem = checker.problem()
                if problem is not None:
                    raise problem
        record.purpose = purpose
        record.downloadable = downloadable
        record.expires_at = record.created_at + seconds_to_us(ttl) if ttl else None
        quota = (settings.max_workspace_bytes or None) if self.quota else None
        await self.files.blobs.commit(record.id, record.chunks)
        try:
            committed = await self.files.store.commit(record, quota)
        except QuotaExceeded:
            raise StorageQuotaExceeded(settings.max_workspace_bytes) from None
        if not committed:
            raise ApiError("api_error", "The upload was abandoned before it finished; upload the file again")
        return record


class Files:
    def __init__(self, store: FileStore, blobs: Blobs, settings: Settings) -> None:
        self.store = store
        self.blobs = blobs
        self.settings = settings
        self._resolved: OrderedDict[tuple[str, str], tuple[dict[str, Any], int]] = OrderedDict()
        self._resolved_bytes = 0

    # -- in ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def upload(self, workspace_id: str, *, limit: int | None = None) -> AsyncIterator[Upload]:
        """An upload in progress: ``receive`` its bytes, ``commit`` it. Leaving the block by
        an exception (a refusal, a truncated body, a client gone) removes every byte."""
        now = now_us()
        record = FileRecord(
            id=new_file_id(now // 1000),
            workspace_id=workspace_id,
            filename="",
            mime_type="application/octet-stream",
            purpose="",
            size_bytes=0,
            chunks=0,
            state=int(FileState.UPLOADING),
            downloadable=False,
            created_at=now,
            expires_at=None,
            touched_at=now,
        )
        await self.store.begin(record)
        upload = Upload(self, record, limit or self.settings.files.max_file_bytes)
        try:
            yield upload
            if record.state != FileState.READY:
                raise RuntimeError("an upload block ended without commit")
        except BaseException:
            # Shielded: a cancelled request (client gone) still cleans up; if the process
            # dies here instead, the sweeper removes the row it left.
            await asyncio.shield(self._discard(record.id))
            raise

    def jsonl_checker(self) -> wire.JsonlChecker:
        return wire.JsonlChecker(self.settings.files.batch_max_lines, self.settings.limits.max_message_bytes)

    async def write(
        self,
        workspace_id: str,
        filename: str,
        purpose: str,
        mime_type: str | None,
        chunks: AsyncIterator[bytes],
        *,
        ttl: float | None = None,
        downloadable: bool = True,
        held_to_limits: bool = True,
    ) -> FileRecord:
        """Store a file the server makes (e.g. ``batch_output``) from an async stream of
        bytes; it is downloadable through both APIs. ``mime_type`` None: sniffed.
        ``held_to_limits=False``: neither the per-file size limit nor the workspace's quota
        applies (a batch's output records work already done, and refusing it would lose
        it; it still counts toward the quota of later uploads)."""
        async with self.upload(workspace_id, limit=None if held_to_limits else SERVER_FILE_LIMIT) as upload:
            upload.quota = held_to_limits
            await upload.receive(chunks, filename=filename, declared_type=mime_type)
            if mime_type:
                upload.record.mime_type = mime_type
            return await upload.commit(purpose=purpose, downloadable=downloadable, ttl=ttl)

    # -- out ---------------------------------------------------------------------------

    async def get(self, workspace_id: str, file_id: str) -> FileRecord:
        record = await self.store.get(workspace_id, file_id)
        if record is None:
            raise FileNotFound(file_id)
        return record

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
        return await self.store.list(
            workspace_id, limit, after_id=after_id, before_id=before_id, ascending=ascending, purpose=purpose, ids=ids
        )

    async def open(self, workspace_id: str, file_id: str) -> FileContent:
        """A file's content, streamed from the store (any file, downloadable or not: this
        is for the server's own reads, such as a batch's input file)."""
        record = await self.get(workspace_id, file_id)
        if record.expired or (record.expires_at is not None and record.expires_at <= now_us()):
            raise FileExpired(file_id)
        return FileContent(record, self.blobs.read(record.id, record.chunks))

    async def download(self, workspace_id: str, file_id: str) -> FileContent:
        """``GET /v1/files/{id}/content``: only files marked downloadable."""
        record = await self.get(workspace_id, file_id)
        if not record.downloadable:
            raise FileNotDownloadable(file_id)
        return await self.open(workspace_id, file_id)

    async def delete(self, workspace_id: str, file_id: str) -> None:
        record = await self.store.hide(workspace_id, file_id)
        if record is None:
            raise FileNotFound(file_id)
        await self._discard(file_id)

    async def _discard(self, file_id: str) -> None:
        await self.blobs.delete(file_id)
        await self.store.remove(file_id)

    # -- file_id in messages -----------------------------------------------------------

    async def resolve(self, validated: ValidatedRequest, workspace_id: str, backend: Any) -> ValidatedRequest:
        """The request with every ``{"type": "file", "file_id"}`` source of a document or
        image block replaced by the file's content, in the form ``backend`` takes (see
        BACKEND_TARGETS): plain text as a text source; a PDF as base64 where the backend
        reads PDFs, else as its text; an image as base64 where it takes images. A file it
        cannot take, of another workspace or unknown is an error for this request only."""
        refs = list(_file_references(validated.model))
        if not refs:
            return validated
        targets = targets_of(backend)
        body = orjson.loads(orjson.dumps(validated.body))
        budget = self.settings.limits.max_message_bytes
        for path, block, source in refs:
            where = ".".join(str(p) for p in path)
            replacement, cost = await self._inline(workspace_id, source.file_id, block, targets, backend, where)
            budget -= cost
            if budget < 0:
                raise invalid_request(
                    f"{where}.source: the files of this request add up to more than "
                    f"{self.settings.limits.max_message_bytes} bytes"
                )
            node: Any = body
            for part in path:
                node = node[part]
            node["source"] = replacement
        model = type(validated.model).model_validate(body)
        return ValidatedRequest(model, body, validated.version)

    async def _inline(
        self, workspace_id: str, file_id: str, block: Any, targets: FileTargets, backend: Any, where: str
    ) -> tuple[dict[str, Any], int]:
        record = await self.get(workspace_id, file_id)  # every use checks the file still exists
        kind = "image" if isinstance(block, ImageBlock) else "document"
        mime = record.mime_type
        backend_name = getattr(backend, "name", "this")
        if kind == "image":
            if mime not in wire.IMAGE_TYPES:
                raise invalid_request(
                    f"{where}.source: file {file_id} is {mime}; image blocks take {', '.join(wire.IMAGE_TYPES)} files"
                )
            if not targets.images:
                raise invalid_request(f"{where}: the {backend_name} backend of this model does not take images")
            form = "base64"
        elif mime == wire.PDF_TYPE:
            form = "base64" if targets.pdf else "pdf-text"
        elif mime.startswith("text/"):
            form = "text"
        else:
            raise invalid_request(
                f"{where}.source: file {file_id} is {mime}; document blocks take PDF and plain-text files"
            )
        if record.size_bytes > self.settings.limits.max_message_bytes:
            raise invalid_request(
                f"{where}.source: file {file_id} is {record.size_bytes} bytes, more than the "
                f"{self.settings.limits.max_message_bytes} bytes a request can carry"
            )
        cached = self._resolved.get((file_id, form))
        if cached is not None:
            self._resolved.move_to_end((file_id, form))
            return cached
        content = await (await self.open(workspace_id, file_id)).read_all()
        if form == "base64":
            encoded = await asyncio.to_thread(lambda: base64.b64encode(content).decode("ascii"))
            source = {"type": "base64", "media_type": mime, "data": encoded}
        else:
            if form == "pdf-text":
                text = await asyncio.to_thread(_pdf_text, content, file_id, where)
            else:
                try:
                    text = content.decode("utf-8")
                except UnicodeDecodeError:
                    raise invalid_request(f"{where}.source: file {file_id} is not UTF-8 text") from None
            source = {"type": "text", "media_type": "text/plain", "data": text}
        cost = sum(len(v) for v in source.values())
        self._remember((file_id, form), source, cost)
        return source, cost

    def _remember(self, key: tuple[str, str], source: dict[str, Any], cost: int) -> None:
        """Files do not change, so what one became is kept (bounded) for the next request
        that names it: the lines of a batch often share one file."""
        if cost > RESOLVED_CACHE_BYTES // 4:
            return
        self._resolved[key] = (source, cost)
        self._resolved_bytes += cost
        while self._resolved_bytes > RESOLVED_CACHE_BYTES:
            _, (_, old) = self._resolved.popitem(last=False)
            self._resolved_bytes -= old

    # -- upkeep ------------------------------------------------------------------------

    async def sweep(self, now: int | None = None) -> None:
        """Remove abandoned uploads (a killed process, a lost client) and expired bytes;
        forget expired files after ``forget_expired_after``."""
        now = now or now_us()
        settings = self.settings
        # A live upload writes (and touches its row) more often than this: a silent client
        # gets a 408 after body_timeout, so an older row is one whose process died.
        stale_after = seconds_to_us(max(settings.files.abandoned_upload_after, 2 * settings.limits.body_timeout))
        for file_id in await self.store.abandoned(now - stale_after):
            await self._discard(file_id)
            log.info("removed an abandoned upload", extra={"file_id": file_id})
        for file_id in await self.store.due_to_expire(now):
            await self.blobs.delete(file_id)
            await self.store.mark_expired(file_id)
        await self.store.forget_expired(now - seconds_to_us(settings.files.forget_expired_after))


async def sweep_forever(files: Files, db: Any) -> None:
    """The files sweep, once per interval, by one process at a time."""
    while True:
        try:
            async with db.exclusive(SWEEP_LOCK_KEY) as held:
                if held:
                    await files.sweep()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("files sweep failed; retrying")
        await asyncio.sleep(files.settings.files.sweep_interval)


def may_reference_files(params: bytes) -> bool:
    """Whether raw params could hold a ``file_id`` source (the key spelled with an escape
    too): a byte search that spares walking the request for one (``Files.resolve``)."""
    return b"file_id" in params or b"\\u" in params


def _file_references(request: Any) -> Iterator[tuple[tuple[str | int, ...], Any, FileSource]]:
    """(path in the body, block, FileSource) for each file source of a document or image
    block, including those inside tool results."""
    for i, message in enumerate(request.messages):
        if not isinstance(message.content, list):
            continue
        for j, block in enumerate(message.content):
            if isinstance(block, (DocumentBlock, ImageBlock)) and isinstance(block.source, FileSource):
                yield ("messages", i, "content", j), block, block.source
            elif isinstance(block, ToolResultBlock) and isinstance(block.content, list):
                for k, inner in enumerate(block.content):
                    if isinstance(inner, (DocumentBlock, ImageBlock)) and isinstance(inner.source, FileSource):
                        yield ("messages", i, "content", j, "content", k), inner, inner.source


def _pdf_text(data: bytes, file_id: str, where: str) -> str:
    """A PDF's text, page by page (pypdf: pure Python, no native parts to build or ship)."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            reader.decrypt("")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise invalid_request(f"{where}.source: file {file_id} is a PDF that cannot be read ({exc})") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise invalid_request(
            f"{where}.source: file {file_id} is a PDF with no text to extract, and this model's backend "
            "takes PDFs only as text"
        )
    return text
