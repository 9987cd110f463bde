"""The batch lifecycle. Every state change of a batch or one of its requests starts here:

create -> in_progress -> (cancel -> canceling) -> ended -> (archive) -> (delete)

The API calls the public methods; the engine asks this class for work (``claim_ready``),
hands back outcomes (``finish``) and runs the periodic ``sweep`` (lease recovery,
cancellation, expiry, archiving). SQL lives in ``store``; wire shapes in ``protocol``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import BinaryIO

from .config import Settings
from .protocol import batches as wire
from .protocol.batch_create import BatchBodyReader, BatchLine
from .protocol.errors import ApiError, invalid_request, not_found
from .protocol.ids import is_batch_id, new_batch_id
from .protocol.timestamps import now_us, seconds_to_us
from .store.batches import BatchRecord, BatchStore, ClaimedRequest, FinishedRequest, QueueFigures, QueueFull, ResultRow
from .store.notify import Notice, Notifier
from .store.schema import RequestState

log = logging.getLogger("batchyard.batches")

DEFAULT_WORKSPACE = "default"
INGEST_CHUNK = 2000
RESULTS_PAGE = 2000
QUEUE_FULL_RETRY_AFTER = 60  # seconds
ARCHIVE_SWEEP_EVERY = 60.0  # seconds
SWEEP_LOCK_KEY = 0x62797377  # "bysw": advisory lock id for the sweeper


def batch_not_found(batch_id: str) -> Exception:
    shown = batch_id if len(batch_id) <= 128 else batch_id[:128] + "..."
    return not_found(f"Message Batch {shown} not found.")


class Batches:
    def __init__(self, store: BatchStore, settings: Settings, notifier: Notifier) -> None:
        self.store = store
        self.settings = settings
        self.notifier = notifier
        self._rotation = 0
        self._last_archive_sweep = 0.0

    # -- the API side ------------------------------------------------------------------

    async def create(
        self, workspace_id: str, api_version: str, body: BinaryIO, *, queue_limit: int | None = None
    ) -> BatchRecord:
        """Read, check and store a whole batch in one transaction; nothing of a bad body
        is written. ``queue_limit`` caps the requests of the workspace's unfinished batches,
        this one included."""
        reader = BatchBodyReader(body, self.settings.batches.max_requests)
        now = now_us()
        record = BatchRecord(
            id=new_batch_id(now // 1000),
            workspace_id=workspace_id,
            api_version=api_version,
            processing_status="in_progress",
            request_count=0,
            succeeded=0,
            errored=0,
            canceled=0,
            expired=0,
            created_at=now,
            expires_at=now + seconds_to_us(self.settings.batches.ttl),
            ended_at=None,
            cancel_initiated_at=None,
            archived_at=None,
        )

        async def chunks() -> AsyncIterator[list[BatchLine]]:
            while True:
                # Parsing is CPU work: keep it off the event loop.
                lines = await asyncio.to_thread(reader.next_chunk, INGEST_CHUNK)
                if not lines:
                    return
                yield lines

        try:
            await self.store.create_batch(record, chunks(), queue_limit=queue_limit)
        except QueueFull as exc:
            raise ApiError(
                "rate_limit_error",
                f"This batch's {exc.adding} requests would bring this workspace's queued batch requests to "
                f"{exc.queued + exc.adding}, over its limit of {exc.limit}. Retry once earlier batches have ended.",
                headers={"retry-after": str(QUEUE_FULL_RETRY_AFTER)},
            ) from None
        log.info("batch created", extra={"batch_id": record.id, "requests": record.request_count})
        await self.notifier.publish(Notice("created", record.id))
        return record

    async def get(self, workspace_id: str, batch_id: str) -> BatchRecord:
        if not is_batch_id(batch_id):
            raise batch_not_found(batch_id)
        record = await self.store.get_batch(batch_id, workspace_id)
        if record is None:
            raise batch_not_found(batch_id)
        return record

    async def list(
        self, workspace_id: str, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list[BatchRecord], bool]:
        for name, cursor in (("after_id", after_id), ("before_id", before_id)):
            if cursor is not None and not is_batch_id(cursor):
                raise invalid_request(f"{name}: {cursor[:128]!r} is not a Message Batch ID")
        return await self.store.list_batches(workspace_id, limit, after_id, before_id)

    async def cancel(self, workspace_id: str, batch_id: str) -> BatchRecord:
        if not is_batch_id(batch_id):
            raise batch_not_found(batch_id)
        record = await self.store.cancel_batch(batch_id, workspace_id, now_us())
        if record is None:
            raise batch_not_found(batch_id)
        if record.processing_status == "canceling":
            await self.notifier.publish(Notice("canceled", batch_id))
        return record

    async def delete(self, workspace_id: str, batch_id: str) -> None:
        if not is_batch_id(batch_id):
            raise batch_not_found(batch_id)
        outcome = await self.store.delete_batch(batch_id, workspace_id)
        if outcome == "missing":
            raise batch_not_found(batch_id)
        if outcome != "deleted":
            raise invalid_request("In progress batches cannot be deleted. Consider canceling the batch instead.")

    async def results(self, workspace_id: str, batch_id: str) -> AsyncIterator[bytes]:
        """The results file as chunks of JSONL, read page by page from the database.

        Raises (before anything is sent) when the batch is unknown or has no results."""
        record = await self.get(workspace_id, batch_id)
        if record.processing_status != "ended" or record.archived_at is not None:
            raise not_found(f"Message Batch {batch_id} has no available results.")
        return self._result_pages(batch_id)

    async def _result_pages(self, batch_id: str) -> AsyncIterator[bytes]:
        after = -1
        while True:
            rows = await self.store.result_rows(batch_id, after, RESULTS_PAGE)
            if not rows:
                return
            yield b"".join(_result_line(row) for row in rows)
            after = rows[-1].idx
            if len(rows) < RESULTS_PAGE:
                return

    # -- the console's live view --------------------------------------------------------

    async def progress(self, workspace_id: str, batch_id: str) -> tuple[BatchRecord, dict[str, int]]:
        """The batch and its requests by state right now (the API shows tallies only at
        the end; the console shows them as they move)."""
        record = await self.get(workspace_id, batch_id)
        counts = {state.result_type: 0 for state in RequestState}
        if record.archived_at is None:
            for state, n in (await self.store.state_counts(batch_id)).items():
                counts[state.result_type] = n
        return record, counts

    async def finished_lines(
        self, workspace_id: str, batch_id: str, result_type: str | None, after_idx: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """Result lines written so far, in submission order: (position, JSONL line)."""
        await self.get(workspace_id, batch_id)
        finished = [RequestState.SUCCEEDED, RequestState.ERRORED, RequestState.CANCELED, RequestState.EXPIRED]
        if result_type is not None:
            finished = [s for s in finished if s.result_type == result_type]
        rows = await self.store.result_rows(batch_id, after_idx, limit, finished)
        return [(row.idx, _result_line(row)) for row in rows]

    async def queue_figures(self) -> QueueFigures:
        """Requests by state, queue depth and batches by status, for /metrics."""
        return await self.store.queue_figures()

    # -- the engine side ---------------------------------------------------------------

    async def claim_ready(self, owner: str, want: int) -> list[ClaimedRequest]:
        """Lease up to ``want`` ready requests, shared evenly across in-progress batches so
        a small batch is not stuck behind a large one."""
        if want <= 0:
            return []
        now = now_us()
        candidates = await self.store.claimable_batches(now)
        if not candidates:
            return []
        start = self._rotation % len(candidates)
        self._rotation += 1
        order = candidates[start:] + candidates[:start]
        share = max(1, math.ceil(want / len(order)))
        lease_until = now + seconds_to_us(self.settings.engine.lease)
        claimed: list[ClaimedRequest] = []
        for batch in order:
            room = want - len(claimed)
            if room <= 0:
                break
            claimed += await self.store.claim(batch, owner, min(share, room), now, lease_until)
        return claimed

    async def renew(self, owner: str, held: Sequence[ClaimedRequest]) -> None:
        until = now_us() + seconds_to_us(self.settings.engine.lease)
        await self.store.renew_leases(owner, [(c.batch_id, c.idx, c.attempts) for c in held], until)

    async def release(self, owner: str, held: Sequence[ClaimedRequest]) -> None:
        await self.store.release(owner, [(c.batch_id, c.idx, c.attempts) for c in held])

    async def release_all(self) -> None:
        """Every running request back to the queue: for the only engine of a database
        (embedded SQLite) when it starts, after a crash left leases behind."""
        released = await self.store.release_all_leases()
        if released:
            log.warning("released leases left by a previous run", extra={"requests": released})

    async def not_in_progress(self, batch_ids: set[str]) -> set[str]:
        """Which of these batches take no new work any more (canceling, ended, deleted)."""
        return await self.store.not_in_progress(batch_ids) if batch_ids else set()

    async def finish(self, owner: str, outcomes: Sequence[FinishedRequest]) -> list[str]:
        ended = await self.store.finish(owner, outcomes, now_us())
        for batch_id in ended:
            log.info("batch ended", extra={"batch_id": batch_id})
        return ended

    async def close_canceled(self, batch_id: str) -> None:
        """Cancel what has not started of a canceling batch (ends it if nothing runs)."""
        if await self.store.close_open_requests(batch_id, now_us(), expire=False):
            log.info("batch ended", extra={"batch_id": batch_id, "reason": "cancel"})

    async def sweep(self) -> None:
        """Recover dead leases; move canceling and expired batches toward their end;
        archive old batches now and then. One engine at a time does this, and only after
        a single cheap read says there is something to do."""
        now = now_us()
        loop_time = asyncio.get_running_loop().time()
        archive_due = loop_time - self._last_archive_sweep >= min(ARCHIVE_SWEEP_EVERY, self.settings.batches.archive_after)
        cutoff = now - seconds_to_us(self.settings.batches.archive_after)
        if not await self.store.sweep_needed(now, cutoff if archive_due else None):
            if archive_due:
                self._last_archive_sweep = loop_time
            return
        async with self.store.db.exclusive(SWEEP_LOCK_KEY) as mine:
            if not mine:
                return
            recovered = await self.store.recover_expired_leases(now)
            if recovered:
                log.warning("recovered expired leases", extra={"requests": recovered})
                await self.notifier.publish(Notice("requeued", "*"))
            for batch_id, action in await self.store.batches_to_close(now):
                if await self.store.close_open_requests(batch_id, now, expire=action == "expire"):
                    log.info("batch ended", extra={"batch_id": batch_id, "reason": action})
            if archive_due:
                self._last_archive_sweep = loop_time
                for batch_id in await self.store.archive(now, cutoff):
                    log.info("batch archived", extra={"batch_id": batch_id})

    def results_url(self, base_url: str, batch_id: str) -> str:
        return f"{base_url}/v1/messages/batches/{batch_id}/results"


def _result_line(row: ResultRow) -> bytes:
    return wire.result_line(row.custom_id, RequestState(row.state).result_type, row.result)
