"""The batch lifecycle. Every state change of a batch or one of its requests starts here:

create -> in_progress -> (cancel -> canceling) -> ended -> (archive) -> (delete)

The API calls the public methods; the engine asks this class for work (``claim_ready``),
hands back reports of what happened (``settle``: the lifecycle's :class:`OutcomePolicy`
decides what each becomes) and runs the periodic ``sweep`` (lease recovery, cancellation,
expiry, archiving). SQL lives in ``store``; wire shapes in ``protocol``.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from .config import Settings
from .files import Files
from .idempotency import IDEMPOTENCY_TTL_US, created_once, key_reused
from .openai_batches import OpenAIBatches
from .outcomes import Decision, OutcomePolicy, Report
from .protocol import batches as wire
from .protocol.batch_create import BatchBodyReader, BatchLine
from .protocol.errors import ApiError, invalid_request, not_found
from .protocol.ids import is_batch_id, is_openai_batch_id, new_batch_id
from .protocol.timestamps import seconds_to_us
from .store.batches import (
    Attempt,
    BatchRecord,
    BatchStore,
    ClaimableBatch,
    ClaimedRequest,
    IdempotencyKey,
    QueueFigures,
    QueueFull,
    ReadyRow,
    Recovered,
    ResultRow,
)
from .store.notify import Notice, Notifier
from .store.schema import RequestState

log = logging.getLogger("batchyard.batches")


INGEST_CHUNK = 500
RESULTS_PAGE = 2000
RESULTS_PAGE_BYTES = 8 * 1024 * 1024
CANDIDATES_TTL = 0.25  # seconds a busy engine goes on claiming from the batches it last read
PEEK_FIRST = 64  # ready requests looked at first per batch per claim, then 4x as many
PEEK_MAX = 2000
CLAIM_RACES = 4  # rounds of picking past rows another engine leased first
QUEUE_FULL_RETRY_AFTER = 60  # seconds
ARCHIVE_SWEEP_EVERY = 60.0  # seconds
LIVE_COUNTS_TTL = 1.0  # seconds a batch's live counts are reused
SWEEP_LOCK_KEY = 0x62797377  # "bysw": advisory lock id for the sweeper


class ResultsGone(Exception):
    """A batch's results disappeared (deleted, archived) while they were streamed out."""


def batch_not_found(batch_id: str) -> Exception:
    shown = batch_id if len(batch_id) <= 128 else batch_id[:128] + "..."
    return not_found(f"Message Batch {shown} not found.")


@dataclass(slots=True)
class ClaimBudget:
    """What an engine can start right now: ``want`` requests in all; at most ``room[r]``
    for a route ``r`` with a concurrency bound (a route not in ``room`` has none); and
    ``suspects`` requests that already lost their worker more than once. An engine holds
    only what it can run, so a crash charges a lost lease to requests that were running,
    not to ones that were waiting their turn; suspects run one at a time, so a poison
    line cannot take the same neighbours down with it again and again."""

    want: int
    room: dict[int, int]
    route_of: Callable[[str | None], int | None]
    suspects: int = 1
    any_unbounded: bool = True  # some route (or a request naming none) has no bound

    @classmethod
    def unbounded(cls, want: int) -> ClaimBudget:
        """Up to ``want`` requests, whatever their routes (tools and tests)."""
        return cls(want, {}, lambda _model: None)

    def window(self) -> int:
        """How many ready requests are worth looking at first."""
        return self.want if self.any_unbounded else min(self.want, max(1, sum(self.room.values())))

    def fits(self, model: str | None) -> bool:
        route = self.route_of(model)
        return route is None or self.room.get(route, 1) > 0

    def take(self, model: str | None, lease_losses: int, isolate_after: int) -> bool:
        if self.want <= 0 or not self.fits(model):
            return False
        if lease_losses >= isolate_after:
            if self.suspects <= 0:
                return False
            self.suspects -= 1
        route = self.route_of(model)
        if route is not None and route in self.room:
            self.room[route] -= 1
        self.want -= 1
        return True

    def refund(self, model: str | None, lease_losses: int, isolate_after: int) -> None:
        """Give back what ``take`` charged for a request that could not be leased after all."""
        if lease_losses >= isolate_after:
            self.suspects += 1
        route = self.route_of(model)
        if route is not None and route in self.room:
            self.room[route] += 1
        self.want += 1


@dataclass(slots=True)
class Settled:
    """What writing a round of reports did."""

    written: list[Decision] = field(default_factory=list)  # decisions now in the database
    stale: list[Attempt] = field(default_factory=list)  # attempts that no longer held their lease
    ended: list[str] = field(default_factory=list)  # batches that ended


class Batches:
    def __init__(self, store: BatchStore, settings: Settings, notifier: Notifier, files: Files | None = None) -> None:
        self.store = store
        self.settings = settings
        self.notifier = notifier
        # OpenAI's Batch API: the same batches, with files for input and output.
        self.openai = OpenAIBatches(self, files) if files is not None else None
        engine = settings.engine
        self.policy = OutcomePolicy(engine.retry_base, engine.retry_cap, engine.max_lease_losses)
        self._rotation = 0
        self._candidates: tuple[float, builtins.list[ClaimableBatch]] | None = None  # (read at, batches)
        self._blocked: dict[str, set[str | None]] = {}  # batch -> models its ready requests need
        self._last_archive_sweep = 0.0
        self._live: dict[str, tuple[float, dict[str, int]]] = {}  # batch -> (good until, counts)

    @property
    def clock(self) -> Callable[[], int]:
        return self.store.clock

    # -- the API side ------------------------------------------------------------------

    async def create(
        self,
        workspace_id: str,
        api_version: str,
        body: IO[bytes],
        *,
        queue_limit: int | None = None,
        key_id: str | None = None,
        idempotency: IdempotencyKey | None = None,
    ) -> BatchRecord:
        """Read, check and store a whole batch in one transaction; nothing of a bad body
        is written. ``queue_limit`` caps the requests of the workspace's unfinished batches,
        this one included. With ``idempotency``, a create with a key already used answers
        with that key's batch."""
        return await created_once(
            self.store,
            idempotency,
            lambda: self._create(workspace_id, api_version, body, queue_limit, key_id, idempotency),
            lambda batch_id: self.get(workspace_id, batch_id),
            lambda key: ApiError("conflict_error", key_reused(key), retryable=False),
        )

    async def _create(
        self,
        workspace_id: str,
        api_version: str,
        body: IO[bytes],
        queue_limit: int | None,
        key_id: str | None,
        idempotency: IdempotencyKey | None,
    ) -> BatchRecord:
        reader = BatchBodyReader(body, self.settings.batches.max_requests)
        now = self.clock()
        record = BatchRecord.started(
            new_batch_id(now // 1000), workspace_id, api_version, now, seconds_to_us(self.settings.batches.ttl), key_id=key_id
        )

        async def chunks() -> AsyncIterator[list[BatchLine]]:
            while True:
                # Parsing is CPU work: keep it off the event loop.
                lines = await asyncio.to_thread(reader.next_chunk, INGEST_CHUNK)
                if not lines:
                    return
                yield lines

        try:
            await self.store.create_batch(record, chunks(), queue_limit=queue_limit, idempotency=idempotency)
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
        record = await self.store.cancel_batch(batch_id, workspace_id, self.clock())
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
        return self._result_pages(batch_id, record.request_count)

    async def _result_pages(self, batch_id: str, expected: int) -> AsyncIterator[bytes]:
        """Pages of JSONL. Each page is its own read, so a batch deleted (or archived) while a
        slow client downloads would leave later pages empty: the count of lines sent is
        checked against the batch's, and a short download fails (the connection is cut
        without the last chunk) instead of ending like a complete one."""
        after, sent = -1, 0
        while True:
            rows = await self.store.result_rows(batch_id, after, RESULTS_PAGE, max_bytes=RESULTS_PAGE_BYTES)
            if rows:
                sent += len(rows)
                yield b"".join(_result_line(row) for row in rows)
                after = rows[-1].idx
            if not rows or sent >= expected:
                break
        if sent != expected:
            log.warning(
                "results download cut short: the batch went away while it was read",
                extra={"batch_id": batch_id, "sent": sent, "expected": expected},
            )
            raise ResultsGone(batch_id)

    # -- the console's live view --------------------------------------------------------

    async def get_any(self, workspace_id: str, batch_id: str) -> BatchRecord:
        """A batch of either Batch API (the console shows both)."""
        if self.openai is not None and is_openai_batch_id(batch_id):
            return await self.openai.get(workspace_id, batch_id)
        return await self.get(workspace_id, batch_id)

    async def list_both(
        self, workspace_id: str, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[builtins.list[BatchRecord], bool]:
        for name, cursor in (("after_id", after_id), ("before_id", before_id)):
            if cursor is not None and not (is_batch_id(cursor) or is_openai_batch_id(cursor)):
                raise invalid_request(f"{name}: {cursor[:128]!r} is not a batch ID")
        return await self.store.list_both(workspace_id, limit, after_id, before_id)

    async def live_counts(self, batch_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Requests of these open batches by result type, as of at most LIVE_COUNTS_TTL ago:
        OpenAI batches show counts that move, and clients poll them often; each count is a
        read over the batch's rows, so one process makes it at most once a second per batch."""
        now = asyncio.get_running_loop().time()
        missing = [b for b in batch_ids if b not in self._live or self._live[b][0] <= now]
        if missing:
            fresh = await self.store.live_counts(missing)
            if len(self._live) > 10_000:
                self._live = {b: v for b, v in self._live.items() if v[0] > now}
            for batch_id in missing:
                counts = {s.result_type: n for s, n in fresh.get(batch_id, {}).items()}
                self._live[batch_id] = (now + LIVE_COUNTS_TTL, counts)
        return {b: self._live[b][1] for b in batch_ids}

    async def progress(self, workspace_id: str, batch_id: str) -> tuple[BatchRecord, dict[str, int]]:
        """The batch and its requests by state right now (the API shows tallies only at
        the end; the console shows them as they move)."""
        record = await self.get_any(workspace_id, batch_id)
        counts = {state.result_type: 0 for state in RequestState}
        if record.archived_at is None:
            for state, n in (await self.store.state_counts(batch_id)).items():
                counts[state.result_type] = n
        return record, counts

    async def finished_lines(
        self, workspace_id: str, batch_id: str, result_type: str | None, after_idx: int, limit: int
    ) -> builtins.list[tuple[int, bytes]]:
        """Result lines written so far, in submission order: (position, JSONL line)."""
        await self.get_any(workspace_id, batch_id)
        finished = [RequestState.SUCCEEDED, RequestState.ERRORED, RequestState.CANCELED, RequestState.EXPIRED]
        if result_type is not None:
            finished = [s for s in finished if s.result_type == result_type]
        rows = await self.store.result_rows(batch_id, after_idx, limit, finished)
        return [(row.idx, _result_line(row)) for row in rows]

    async def queue_figures(self) -> QueueFigures:
        """Requests by state, queue depth and batches by status, for /metrics."""
        return await self.store.queue_figures()

    # -- the engine side ---------------------------------------------------------------

    async def claim_ready(
        self, owner: str, budget: ClaimBudget, *, fresh: bool = True
    ) -> builtins.list[ClaimedRequest] | None:
        """Lease ready requests the engine can start now (``budget``), shared evenly across
        in-progress batches so a small batch is not stuck behind a large one. None when
        nothing at all is ready (new work will come with a notice or the next poll).

        Which batches have work is read again unless ``fresh`` is false and the last round
        took all it wanted from them less than ``CANDIDATES_TTL`` ago (a busy engine then
        spends no query per round on it; a new batch comes with a notice, which asks for a
        fresh read)."""
        if budget.want <= 0:
            return []
        now = time.monotonic()
        if fresh or self._candidates is None or now - self._candidates[0] > CANDIDATES_TTL:
            self._candidates = None
            candidates = await self.store.claimable_batches()
            if not candidates:
                return None
        else:
            candidates = self._candidates[1]
        wanted_in_all = budget.want
        start = self._rotation % len(candidates)
        self._rotation += 1
        order = candidates[start:] + candidates[:start]
        share = max(1, math.ceil(budget.want / len(order)))
        lease_us = seconds_to_us(self.settings.engine.lease)
        isolate_after = self.policy.isolate_after
        claimed: builtins.list[ClaimedRequest] = []
        for batch in order:
            if budget.want <= 0:
                break
            blocked = self._blocked.get(batch.id)
            if blocked is not None and not any(budget.fits(model) for model in blocked):
                continue  # its ready requests all need routes that are still full
            wanted = share
            if not budget.room:  # no route bound applies: the next ones, in one statement
                got = await self.store.claim_next(batch, owner, share, lease_us, below_losses=isolate_after)
                budget.want -= len(got)
                claimed += got
                wanted -= len(got)
                if not wanted or budget.suspects <= 0:
                    continue  # (fewer than asked: maybe only suspects are left, picked below)
            claimed += await self._claim_picked(batch, owner, wanted, budget, lease_us)
        if len(self._blocked) > len(candidates):
            self._blocked = {b: m for b, m in self._blocked.items() if b in {c.id for c in candidates}}
        # All that was wanted: these batches likely have more. Less: read them again next time.
        self._candidates = (now, candidates) if len(claimed) >= wanted_in_all else None
        return claimed

    async def _claim_picked(
        self, batch: ClaimableBatch, owner: str, share: int, budget: ClaimBudget, lease_us: int
    ) -> builtins.list[ClaimedRequest]:
        """Up to ``share`` ready requests of one batch that fit the budget, picked, then leased.
        Another engine may lease some of the picked ones first (it read the same ready rows):
        their room is given back and the next ready ones after them are tried, so engines
        sharing a batch take turns instead of the slower one coming away empty-handed."""
        isolate_after = self.policy.isolate_after
        claimed: builtins.list[ClaimedRequest] = []
        after = -1
        for attempt in range(CLAIM_RACES):
            picked, refused = await self._pick(batch.id, share - len(claimed), budget, isolate_after, after)
            if attempt == 0:
                if refused and not picked:
                    self._blocked[batch.id] = refused
                else:
                    self._blocked.pop(batch.id, None)
            got = await self.store.claim(batch, owner, [row.idx for row in picked], lease_us)
            claimed += got
            if len(got) == len(picked):
                break
            leased = {request.idx for request in got}
            for row in picked:
                if row.idx not in leased:
                    budget.refund(row.model, row.lease_losses, isolate_after)
            after = picked[-1].idx
        return claimed

    async def _pick(
        self, batch_id: str, share: int, budget: ClaimBudget, isolate_after: int, after: int = -1
    ) -> tuple[builtins.list[ReadyRow], set[str | None]]:
        """Up to ``share`` ready requests of one batch after position ``after`` that fit the
        budget, looked at in growing windows; stops at the first one that does not fit (its
        route is full). Returns them, and the models of the ones that did not fit."""
        picked: builtins.list[ReadyRow] = []
        refused: set[str | None] = set()
        window = max(PEEK_FIRST, budget.window())
        while len(picked) < share and budget.want > 0:
            limit = min(window, share - len(picked))
            rows = await self.store.peek_ready(batch_id, limit, after)
            for row in rows:
                if budget.take(row.model, row.lease_losses, isolate_after):
                    picked.append(row)
                else:
                    refused.add(row.model)
            if refused or len(rows) < limit:
                break
            after, window = rows[-1].idx, min(window * 4, PEEK_MAX)
        return picked, refused

    async def renew(self, owner: str, held: Sequence[Attempt]) -> builtins.list[Attempt]:
        """Extend the leases of running attempts; returns the ones that lost theirs."""
        return await self.store.renew_leases(owner, held, seconds_to_us(self.settings.engine.lease))

    async def release(self, owner: str, held: Sequence[Attempt]) -> None:
        await self.store.release(owner, held)

    async def recover_on_start(self) -> None:
        """For the only engine of a database (embedded SQLite) when it starts: whatever is
        still running was left by a previous run that died, each a lost lease."""
        self._recovered(await self.store.recover_leases(self.policy.after_lost_lease, every_running=True))

    async def batch_states(self, batch_ids: set[str]) -> dict[str, str]:
        """Processing status of these batches (a deleted one is missing)."""
        return await self.store.batch_states(batch_ids) if batch_ids else {}

    async def settle(self, owner: str, reports: Sequence[Report]) -> Settled:
        """Decide what each report means and write it, fenced by the attempt that was run."""
        if not reports:
            return Settled()
        now = self.clock()
        decisions = [self.policy.decide(report, now) for report in reports]
        finished = await self.store.finish(owner, [d.outcome for d in decisions])
        stale = set(finished.stale)
        self._ended(finished.ended, None)
        return Settled([d for d in decisions if d.outcome.attempt not in stale], finished.stale, finished.ended)

    def _recovered(self, recovered: Recovered) -> int:
        if recovered.requeued:
            log.warning("recovered lost leases", extra={"requests": recovered.requeued})
        if recovered.ended_requests:
            log.warning(
                "requests errored after losing their worker too often",
                extra={"requests": recovered.ended_requests, "max_lease_losses": self.policy.max_lease_losses},
            )
        self._ended(recovered.ended, "poison")
        return recovered.requeued

    def _ended(self, batch_ids: Sequence[str], reason: str | None) -> None:
        for batch_id in batch_ids:
            log.info("batch ended", extra={"batch_id": batch_id, **({"reason": reason} if reason else {})})
        if batch_ids:
            # Their webhook events are committed: this process's sender looks now (batches
            # end in the engine, where the sender runs; it looks on its own now and then too).
            self.notifier.deliver(Notice("ended", "*"))

    async def close_canceled(self, batch_id: str) -> None:
        """Cancel what has not started of a canceling batch (ends it if nothing runs)."""
        if await self.store.close_open_requests(batch_id, self.clock(), expire=False):
            self._ended([batch_id], "cancel")
            await self.finalize([batch_id])

    async def finalize(self, batch_ids: Sequence[str] | None = None) -> None:
        """Write the output files of ended OpenAI batches (these, or all that lack them)."""
        if self.openai is not None:
            await self.openai.finalize(batch_ids)

    async def sweep(self) -> None:
        """Recover dead leases; move canceling and expired batches toward their end;
        archive old batches now and then. One engine at a time does this, and only after
        a single cheap read says there is something to do."""
        now = self.clock()
        loop_time = asyncio.get_running_loop().time()
        archive_due = loop_time - self._last_archive_sweep >= min(ARCHIVE_SWEEP_EVERY, self.settings.batches.archive_after)
        cutoff = now - seconds_to_us(self.settings.batches.archive_after)
        if archive_due:
            await self.store.forget_idempotency_keys(now - IDEMPOTENCY_TTL_US)  # a day old: they name nothing
        if not await self.store.sweep_needed(now, cutoff if archive_due else None):
            if archive_due:
                self._last_archive_sweep = loop_time
            return
        async with self.store.db.exclusive(SWEEP_LOCK_KEY) as mine:
            if not mine:
                return
            # Expired batches first, so their dead leases end with them instead of being
            # requeued (and claimed again) a moment before; canceling ones after the
            # recovery, so a dead lease of theirs is canceled in this same sweep.
            closing = await self.store.batches_to_close(now)
            await self._close(now, [batch_id for batch_id, action in closing if action == "expire"], "expire")
            if self._recovered(await self.store.recover_leases(self.policy.after_lost_lease)):
                await self.notifier.publish(Notice("requeued", "*"))
            await self._close(now, [batch_id for batch_id, action in closing if action != "expire"], "cancel")
            if archive_due:
                self._last_archive_sweep = loop_time
                for batch_id in await self.store.archive(now, cutoff):
                    log.info("batch archived", extra={"batch_id": batch_id})
        # OpenAI batches ended by this sweep, or left without files by a crash: outside the
        # sweep's lock (writing files takes seconds; each batch has a lock of its own).
        await self.finalize()

    async def _close(self, now: int, batch_ids: builtins.list[str], action: str) -> None:
        for batch_id in batch_ids:
            if await self.store.close_open_requests(batch_id, now, expire=action == "expire"):
                self._ended([batch_id], action)

    def results_url(self, base_url: str, batch_id: str) -> str:
        return f"{base_url}/v1/messages/batches/{batch_id}/results"


def _result_line(row: ResultRow) -> bytes:
    return wire.result_line(row.custom_id, RequestState(row.state).result_type, row.result)
