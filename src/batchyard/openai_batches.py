"""The lifecycle of OpenAI Batch API batches, over the one batch lifecycle and engine:

create (the input file read as a stream into request rows; bad lines: ``failed``) ->
in_progress -> (cancel -> cancelling) -> ended -> output and error files written (once) ->
completed | cancelled | expired

A batch of this API is a row of the same ``batches`` table (``api = "openai"``) and its
lines are the engine's requests like any Message Batch's: one queue, one fair share, the
same leases, retries and recovery. What is its own: the input comes from a file of the
store, and when the batch ends (in the same transaction as its last request, as for any
batch) its results are written out as two files of the store, fenced so they are
recorded once. :class:`batchyard.batches.Batches` owns an instance and calls
:meth:`OpenAIBatches.finalize` when batches end and from its sweep (a crash between the end
and the files leaves the batch to the next sweep). Wire shapes: ``protocol.openai_batches``.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from .files import Files
from .idempotency import created_once, key_reused
from .protocol import openai_batches as wire
from .protocol import webhooks as hooks
from .protocol.batch_create import BatchLine
from .protocol.errors import ApiError
from .protocol.files import FileProblem
from .protocol.ids import is_openai_batch_id, new_event_id, new_openai_batch_id
from .protocol.timestamps import seconds_to_us
from .store.batches import BatchRecord, IdempotencyKey, QueueFull
from .store.notify import Notice
from .store.schema import RequestState
from .store.webhooks import OutboxEvent

if TYPE_CHECKING:
    from .batches import Batches

log = logging.getLogger("batchyard.openai_batches")

INGEST_CHUNK = 500  # input lines checked per trip to a thread and inserted per statement
OUTPUT_PAGE = 2000
OUTPUT_PAGE_BYTES = 8 * 1024 * 1024
FINALIZE_LOCK_SPACE = 0x6279_6F66  # "byof": one writer of a batch's files across processes
NOT_RUN = (RequestState.ERRORED, RequestState.CANCELED, RequestState.EXPIRED)
RETRY_FINALIZE_AFTER = (5.0, 300.0)  # seconds before a failed write of a batch's files is tried again: first, most


class _InputFailed(Exception):
    """The input file has bad lines: nothing of it is stored, the batch is ``failed``."""


def batch_not_found(batch_id: str) -> ApiError:
    shown = batch_id if len(batch_id) <= 128 else batch_id[:128] + "..."
    return ApiError("invalid_request_error", f"No such Batch object: {shown}", status=404, param="batch_id")


class OpenAIBatches:
    def __init__(self, batches: Batches, files: Files) -> None:
        self.batches = batches
        self.store = batches.store
        self.files = files
        self.settings = batches.settings
        self._finalizing: set[str] = set()
        self._failures: dict[str, tuple[int, float]] = {}  # batch -> (failed writes, loop time to try again)

    # -- the API side ------------------------------------------------------------------

    async def create(
        self,
        workspace_id: str,
        body: Any,
        *,
        queue_limit: int | None = None,
        key_id: str | None = None,
        idempotency: IdempotencyKey | None = None,
    ) -> BatchRecord:
        """Check the create body, read the input file line by line and store the batch with
        every line in one transaction. A file with bad lines makes a ``failed`` batch (no
        lines stored) whose errors name them. With ``idempotency``, a create with a key
        already used answers with that key's batch."""
        return await created_once(
            self.store,
            idempotency,
            lambda: self._create(workspace_id, body, queue_limit, key_id, idempotency),
            lambda batch_id: self.get(workspace_id, batch_id),
            lambda key: ApiError(
                "invalid_request_error", key_reused(key), status=409, retryable=False, code="idempotency_key_reused"
            ),
        )

    def _event(self, record: BatchRecord, event_type: str, now: int) -> OutboxEvent:
        event_id = new_event_id(now // 1000)
        payload = hooks.openai_batch_event(event_id, now, event_type, record.id)
        return OutboxEvent(event_id, event_type, record.workspace_id, record.id, payload, now)

    async def _create(
        self,
        workspace_id: str,
        body: Any,
        queue_limit: int | None,
        key_id: str | None,
        idempotency: IdempotencyKey | None,
    ) -> BatchRecord:
        params = wire.parse_create(body)
        try:
            source = await self.files.get(workspace_id, params.input_file_id)
            content = await self.files.open(workspace_id, source.id)
        except FileProblem as exc:
            error = exc.openai()
            error.param = "input_file_id"
            raise error from None
        if source.purpose != "batch":
            raise wire.bad_param(
                "input_file_id",
                f"File {source.id} has purpose '{source.purpose}'; a batch's input file must be uploaded "
                "with purpose 'batch'.",
            )
        now = self.batches.clock()
        reader = wire.InputReader(min(self.settings.files.batch_max_lines, self.settings.batches.max_requests))
        details: dict[str, Any] = {"metadata": params.metadata, "output_ttl": params.output_ttl}
        record = BatchRecord.started(
            new_openai_batch_id(now // 1000),
            workspace_id,
            "2023-06-01",
            now,
            seconds_to_us(self.settings.batches.ttl),
            api="openai",
            endpoint=params.endpoint,
            input_file_id=source.id,
            key_id=key_id,
        )

        async def chunks() -> AsyncIterator[list[BatchLine]]:
            numbered: list[tuple[int, bytes]] = []
            number = 0
            async for line in content.lines():
                number += 1
                numbered.append((number, line))
                if len(numbered) >= INGEST_CHUNK:
                    good = await asyncio.to_thread(reader.read, numbered)  # CPU work: off the loop
                    numbered = []
                    if good:
                        yield good
            if numbered:
                good = await asyncio.to_thread(reader.read, numbered)
                if good:
                    yield good
            if reader.failed or reader.count == 0:
                raise _InputFailed
            details["model"] = reader.model
            record.details = orjson.dumps(details)

        try:
            await self.store.create_batch(record, chunks(), queue_limit=queue_limit, idempotency=idempotency)
        except _InputFailed:
            errors = reader.errors or [
                {"code": "empty_file", "line": None, "message": "The input file has no requests.", "param": None}
            ]
            record.processing_status, record.request_count = "ended", 0
            record.ended_at = record.finalized_at = now
            record.details = orjson.dumps({**details, "model": reader.model, "errors": errors})

            async def nothing() -> AsyncIterator[list[BatchLine]]:
                return
                yield  # (an async generator with no lines)

            await self.store.create_batch(
                record, nothing(), idempotency=idempotency, events=[self._event(record, "batch.failed", now)]
            )
            log.info("batch failed validation", extra={"batch_id": record.id, "bad_lines": reader.bad_lines})
            await self.batches.notifier.publish(Notice("ended", record.id))  # its batch.failed event is committed
            return record
        except QueueFull as exc:
            raise ApiError(
                "rate_limit_error",
                f"This batch's {exc.adding} requests would bring this workspace's queued batch requests to "
                f"{exc.queued + exc.adding}, over its limit of {exc.limit}. Retry once earlier batches have ended.",
                headers={"retry-after": "60"},
                code="batch_queue_full",
            ) from None
        log.info("batch created", extra={"batch_id": record.id, "requests": record.request_count, "api": "openai"})
        await self.batches.notifier.publish(Notice("created", record.id))
        return record

    async def get(self, workspace_id: str, batch_id: str) -> BatchRecord:
        if not is_openai_batch_id(batch_id):
            raise batch_not_found(batch_id)
        record = await self.store.get_batch(batch_id, workspace_id, api="openai")
        if record is None:
            raise batch_not_found(batch_id)
        return record

    async def list(self, workspace_id: str, limit: int, after: str | None) -> tuple[list[BatchRecord], bool]:
        if after is not None and not is_openai_batch_id(after):
            raise wire.bad_param("after", f"Invalid 'after': {after[:128]!r} is not a batch id.")
        return await self.store.list_batches(workspace_id, limit, after, None, api="openai")

    async def cancel(self, workspace_id: str, batch_id: str) -> BatchRecord:
        if not is_openai_batch_id(batch_id):
            raise batch_not_found(batch_id)
        record = await self.store.cancel_batch(batch_id, workspace_id, self.batches.clock(), api="openai")
        if record is None:
            raise batch_not_found(batch_id)
        if record.processing_status == "canceling" and record.cancel_initiated_at is not None:
            await self.batches.notifier.publish(Notice("canceled", batch_id))
            return record
        status = wire.status_of(record, orjson.loads(record.details) if record.details else {})
        if status in ("completed", "failed", "expired", "finalizing"):
            raise ApiError("invalid_request_error", f"Cannot cancel a batch with status '{status}'.", status=409)
        return record  # cancelling or cancelled already: cancel is idempotent

    async def views(self, records: Sequence[BatchRecord]) -> builtins.list[dict[str, Any]]:
        """The batch objects, with the live counts of those still open."""
        live = await self.batches.live_counts([r.id for r in records if r.processing_status != "ended"])
        return [wire.batch_object(r, live.get(r.id)) for r in records]

    # -- the end: output and error files -----------------------------------------------

    async def finalize(self, batch_ids: Sequence[str] | None = None) -> None:
        """Write the output and error files of ended batches that have none yet (of these,
        or of every one). Each batch's files are written by one process at a time and
        recorded once; a writer that loses the race removes its copies."""
        pending = await self.store.unfinalized()
        if batch_ids is not None:
            wanted = set(batch_ids)
            pending = [r for r in pending if r.id in wanted]
        now = asyncio.get_running_loop().time()
        for record in pending:
            failures, retry_at = self._failures.get(record.id, (0, 0.0))
            if record.id in self._finalizing or retry_at > now:
                continue
            self._finalizing.add(record.id)
            try:
                # One lock per batch, in a space of its own (above every 32-bit lock id).
                key = int.from_bytes(hashlib.blake2b(record.id.encode(), digest_size=4).digest(), "big") >> 1
                async with self.store.db.exclusive((FINALIZE_LOCK_SPACE << 31) | key) as mine:
                    if mine:
                        # Read again under the lock: another writer may have finished it meanwhile.
                        current = await self.store.get_batch(record.id, record.workspace_id, api="openai")
                        if current is not None and current.finalized_at is None:
                            await self._write_files(current)
                self._failures.pop(record.id, None)
            except Exception:
                first, most = RETRY_FINALIZE_AFTER
                delay = min(most, first * 2**failures)
                self._failures[record.id] = (failures + 1, asyncio.get_running_loop().time() + delay)
                log.exception(
                    "writing a batch's output files failed; it is tried again later",
                    extra={"batch_id": record.id, "retry_in_s": delay},
                )
            finally:
                self._finalizing.discard(record.id)

    async def _write_files(self, record: BatchRecord) -> None:
        details = orjson.loads(record.details) if record.details else {}
        ttl = details.get("output_ttl") or self.settings.files.default_ttl or None
        usage = wire.Usage()
        names = [f"{record.id}_output.jsonl", f"{record.id}_error.jsonl"]
        # Files of an earlier try that a crash kept from being recorded (nobody else makes
        # batch_output files of these names): gone before the new ones are written.
        for leftover in await self.files.store.named(record.workspace_id, "batch_output", names):
            await self._forget(record.workspace_id, leftover)
        written: builtins.list[str] = []
        output_id = error_id = None
        recorded = False
        try:
            if record.succeeded:
                output = await self.files.write(
                    record.workspace_id,
                    names[0],
                    "batch_output",
                    "application/jsonl",
                    self._lines(record.id, (RequestState.SUCCEEDED,), usage),
                    ttl=ttl,
                    held_to_limits=False,
                )
                output_id = output.id
                written.append(output.id)
            if record.errored + record.canceled + record.expired:
                errors = await self.files.write(
                    record.workspace_id,
                    names[1],
                    "batch_output",
                    "application/jsonl",
                    self._lines(record.id, NOT_RUN, wire.Usage()),
                    ttl=ttl,
                    held_to_limits=False,
                )
                error_id = errors.id
                written.append(errors.id)
            details["usage"] = usage.wire()
            now = self.batches.clock()
            record.finalized_at = now  # (a copy read for this write: its status once recorded)
            event = hooks.openai_event_type(wire.status_of(record, details))
            events = [self._event(record, event, now)] if event is not None else []
            # Shielded: a commit that lands while this task is cancelled must still count.
            recorded = await asyncio.shield(
                self.store.set_outputs(record.id, output_id, error_id, orjson.dumps(details), now, events)
            )
        finally:
            if not recorded and written:
                # Not recorded (another writer won, or this try failed): remove this try's
                # files, unless the batch row names them after all (a commit whose answer was lost).
                current = await asyncio.shield(self.store.get_batch(record.id, record.workspace_id, api="openai"))
                kept = set() if current is None else {current.output_file_id, current.error_file_id}
                for file_id in written:
                    if file_id not in kept:
                        await asyncio.shield(self._forget(record.workspace_id, file_id))
        if not recorded:
            return
        if events:
            await self.batches.notifier.publish(Notice("ended", record.id))  # its webhook event is committed
        log.info(
            "batch output written",
            extra={"batch_id": record.id, "output_file_id": output_id, "error_file_id": error_id},
        )

    async def _forget(self, workspace_id: str, file_id: str) -> None:
        try:
            await self.files.delete(workspace_id, file_id)
        except Exception:
            log.warning("could not remove an unused output file", extra={"file_id": file_id})

    async def _lines(self, batch_id: str, states: Sequence[RequestState], usage: wire.Usage) -> AsyncIterator[bytes]:
        """The file's lines, page by page from the database, in submission order."""
        after = -1
        while True:
            rows = await self.store.result_rows(batch_id, after, OUTPUT_PAGE, states, max_bytes=OUTPUT_PAGE_BYTES)
            if not rows:
                return

            def render(rows: list[Any] = rows) -> bytes:
                return b"".join(
                    wire.output_line(batch_id, row.idx, row.custom_id, RequestState(row.state).result_type, row.result, usage)
                    for row in rows
                )

            yield await asyncio.to_thread(render)
            after = rows[-1].idx
