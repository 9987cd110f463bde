"""Every SQL statement about batches and their requests, one method per transaction.

State transitions are decided by the lifecycle (``batchyard.batches``); this module
only knows how to make each one atomic. The rules it enforces in SQL:

* a request's result is written only by its current lease holder: the UPDATE matches
  the lease owner *and* the attempt number it claimed (a fence against its own past);
* a batch is finalized (``ended``, counts, ``ended_at``) in the same transaction as its
  last open request, and exactly once: the UPDATE matches ``processing_status <> 'ended'``
  and, on PostgreSQL, runs while holding the batch row's lock, so two workers finishing
  the last two requests at once cannot both miss (or both take) the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..protocol import webhooks as hooks
from ..protocol.batch_create import BatchLine
from ..protocol.ids import new_event_id
from ..protocol.timestamps import now_us
from ..protocol.usage import Tokens
from .database import PG_NOW, Database, DriverStatement
from .schema import OPEN_STATES, RequestState, batch_requests, batches, idempotency_keys
from .usage import UsageKey, UsageStore, merge
from .webhooks import OutboxEvent, WebhookStore

R = batch_requests
B = batches
K = idempotency_keys


QUEUE_LOCK_SPACE = 0x62797175  # "byqu": advisory locks (space, workspace hash) for queue caps


class _SomeStale(Exception):
    """A fenced write matched fewer rows than it was given (SQLite's first try)."""


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """An ``Idempotency-Key`` of a create: its key space (workspace, API), the key, the
    body's digest, and the oldest creation time a stored key still counts from."""

    workspace_id: str
    api: str
    key: str
    body_hash: str
    not_before: int


class IdempotencyTaken(Exception):
    """The key was stored first by another create (committed): the caller reads it."""


class QueueFull(Exception):
    """The workspace's queue of unfinished batch requests would pass its cap."""

    def __init__(self, queued: int, adding: int, limit: int) -> None:
        super().__init__(f"{queued} queued + {adding} > {limit}")
        self.queued, self.adding, self.limit = queued, adding, limit



Attempt = tuple[str, int, int]  # (batch id, index, attempt number): one claim of one request

# Leases and retry times are compared on PG_NOW, the database's clock, on PostgreSQL: hosts
# whose clocks differ neither steal live leases nor keep dead ones. (SQLite is embedded:
# its clock is the host's.)


def _fence() -> tuple[Any, ...]:
    """The fence of every write by a lease holder: the request is still running, under this
    owner (``o``) and this attempt (``a``). A stale worker's write matches no row."""
    return (
        R.c.batch_id == bindparam("b"),
        R.c.idx == bindparam("i"),
        R.c.attempts == bindparam("a"),
        R.c.lease_owner == bindparam("o"),
        R.c.state == RequestState.RUNNING,
    )


async def _still_held(store: BatchStore, conn: AsyncConnection, owner: str, attempts: Sequence[Attempt]) -> set[Attempt]:
    """Which of these attempts still hold their lease (locking their rows on PostgreSQL,
    so the write that follows in this transaction cannot be overtaken)."""
    by_batch: dict[str, list[int]] = {}
    for batch_id, idx, _ in attempts:
        by_batch.setdefault(batch_id, []).append(idx)
    def build() -> Any:
        query = select(R.c.batch_id, R.c.idx, R.c.attempts).where(
            R.c.batch_id == bindparam("batch"),
            *store._among_listed(),
            R.c.lease_owner == bindparam("owner"),
            R.c.state == RequestState.RUNNING,
        )
        return query.with_for_update() if store.db.is_postgres else query

    statement = store.db.statement("still_held", build)
    held: set[Attempt] = set()
    for batch_id, idxs in by_batch.items():
        values = {"batch": batch_id, "owner": owner, **store._listed(idxs)}
        held.update((b, i, a) for b, i, a in await statement.execute(conn, values))
    return {a for a in attempts if a in held}


@dataclass(slots=True)
class BatchRecord:
    id: str
    workspace_id: str
    api_version: str
    processing_status: str
    request_count: int
    succeeded: int
    errored: int
    canceled: int
    expired: int
    created_at: int
    expires_at: int
    ended_at: int | None
    cancel_initiated_at: int | None
    archived_at: int | None
    api: str = "anthropic"  # the Batch API it came through: "anthropic" or "openai"
    endpoint: str | None = None  # OpenAI batches: the endpoint every line targets
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    details: bytes | None = None  # JSON (OpenAI batches): metadata, errors, usage, model
    finalized_at: int | None = None  # OpenAI batches: when the output and error files were written
    key_id: str | None = None  # the API key that created it (None in open mode)

    @classmethod
    def from_row(cls, row: Any) -> BatchRecord:
        return cls(**row._mapping)

    @classmethod
    def started(cls, batch_id: str, workspace_id: str, api_version: str, now: int, ttl_us: int, **more: Any) -> BatchRecord:
        """A new batch, in progress from ``now``, expiring ``ttl_us`` later (``more``: the
        fields of its API, such as ``api``, ``endpoint``, ``key_id``)."""
        return cls(
            id=batch_id,
            workspace_id=workspace_id,
            api_version=api_version,
            processing_status="in_progress",
            request_count=0,
            succeeded=0,
            errored=0,
            canceled=0,
            expired=0,
            created_at=now,
            expires_at=now + ttl_us,
            ended_at=None,
            cancel_initiated_at=None,
            archived_at=None,
            **more,
        )


@dataclass(slots=True)
class ClaimableBatch:
    id: str
    workspace_id: str
    api_version: str
    expires_at: int
    endpoint: str | None = None  # OpenAI batches: what their lines are (None: Messages params)
    key_id: str | None = None


@dataclass(slots=True)
class ClaimedRequest:
    batch_id: str
    idx: int
    custom_id: str
    params: bytes
    attempts: int  # the fence: this claim's attempt number
    api_version: str
    expires_at: int
    workspace_id: str = ""
    lease_losses: int = 0  # workers lost while running it before this attempt
    model: str | None = None  # the model its params name (None when they name none)
    endpoint: str | None = None  # an OpenAI batch's endpoint: its params are that endpoint's body
    key_id: str | None = None  # the key that created its batch: its usage is that key's

    @property
    def attempt(self) -> Attempt:
        return (self.batch_id, self.idx, self.attempts)


@dataclass(slots=True)
class ReadyRow:
    """A request ready to run, as the engine sees it before claiming: which model it asks
    for (so which route it needs) and how suspect it is."""

    idx: int
    model: str | None
    lease_losses: int


@dataclass(slots=True)
class FinishedRequest:
    """What becomes of a claimed request: a terminal state with its result, or PENDING
    again with ``retry_delay_us`` before the next attempt."""

    batch_id: str
    idx: int
    attempts: int
    state: RequestState
    result: bytes | None
    retry_delay_us: int = 0
    usage: tuple[UsageKey, Tokens] | None = None  # what the backend used, counted with the result

    @property
    def attempt(self) -> Attempt:
        return (self.batch_id, self.idx, self.attempts)


@dataclass(slots=True)
class Finished:
    """What a write of outcomes did: the batches it ended, and the attempts whose lease
    fence failed (another attempt owns the request now, or it was closed)."""

    ended: list[str] = field(default_factory=list)
    stale: list[Attempt] = field(default_factory=list)


@dataclass(slots=True)
class Recovered:
    """What lease recovery did: requests back in the queue, requests that ended (poison
    lines), and the batches that ended with them."""

    requeued: int = 0
    ended_requests: int = 0
    ended: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LostLease:
    """A running request whose holder stopped renewing its lease (or died)."""

    batch_id: str
    idx: int
    attempts: int
    lease_losses: int  # including this one


@dataclass(slots=True)
class QueueFigures:
    requests_by_state: dict[str, int]
    pending: int
    batches: dict[str, int]


@dataclass(slots=True)
class ResultRow:
    idx: int
    custom_id: str
    state: int
    result: bytes | None


_BATCH_COLUMNS = [c for c in B.c]


def _picked(query: Any) -> Any:
    """Rows chosen once, then acted on. As a plain ``IN (subquery)`` PostgreSQL may run a
    LIMIT ... FOR UPDATE SKIP LOCKED subquery again for every candidate row, each time
    skipping the rows the last run locked, and so take far more than LIMIT rows. A
    materialized CTE runs it exactly once (SQLite reads the syntax the same way)."""
    return query.cte("picked").prefix_with("MATERIALIZED")


def _to_close(now: Any) -> tuple[Any, ...]:
    """Open batches the sweeper must close: canceling, or past their expiry."""
    return (B.c.processing_status != "ended", (B.c.processing_status == "canceling") | (B.c.expires_at <= now))


def _unfinalized() -> tuple[Any, ...]:
    """Ended OpenAI batches whose output and error files are still to be written."""
    return (B.c.api == "openai", B.c.finalized_at.is_(None), B.c.processing_status == "ended")


def _by_state(batch_id: str) -> Any:
    """A batch's requests counted by state."""
    return select(R.c.state, func.count()).where(R.c.batch_id == batch_id).group_by(R.c.state)


class BatchStore:
    def __init__(self, db: Database, clock: Callable[[], int] = now_us) -> None:
        self.db = db
        self.clock = clock  # the host's clock (microseconds); tests may set their own
        self.usage = UsageStore(db)
        self.webhooks = WebhookStore(db)

    def _db_now(self) -> Any:
        """Now, on the clock leases are compared against (see ``PG_NOW``), as a value in
        the statement (``_now`` is the form for statements compiled once)."""
        return PG_NOW if self.db.is_postgres else literal(self.clock(), BigInteger)

    # -- batches -----------------------------------------------------------------------

    async def create_batch(
        self,
        record: BatchRecord,
        chunks: AsyncIterator[list[BatchLine]],
        *,
        queue_limit: int | None = None,
        idempotency: IdempotencyKey | None = None,
        events: Sequence[OutboxEvent] = (),
    ) -> int:
        """Insert a batch and all its requests in one transaction; return the count.

        ``chunks`` may raise (a bad body found late): then nothing is written. With a
        ``queue_limit``, the workspace's unfinished requests plus these may not exceed it.
        With ``idempotency`` the key is stored in the same transaction: ``IdempotencyTaken``
        (nothing written) when another create stored it first. ``events``: webhook events of
        a batch that is born ended (an OpenAI batch that failed validation)."""
        try:
            return await self._create_batch(record, chunks, queue_limit, idempotency, events)
        except IntegrityError:
            if idempotency is not None and await self.idempotent_batch(idempotency) is not None:
                raise IdempotencyTaken from None
            raise

    async def idempotent_batch(self, key: IdempotencyKey) -> tuple[str, str] | None:
        """The (batch id, body digest) stored under this key, if it still counts."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(K.c.batch_id, K.c.body_hash).where(
                        K.c.workspace_id == key.workspace_id, K.c.api == key.api, K.c.key == key.key,
                        K.c.created_at >= key.not_before,
                    )
                )
            ).first()  # fmt: skip
        return None if row is None else (row[0], row[1])

    async def forget_idempotency_keys(self, before: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(K).where(K.c.created_at < before))

    async def _create_batch(
        self,
        record: BatchRecord,
        chunks: AsyncIterator[list[BatchLine]],
        queue_limit: int | None,
        idempotency: IdempotencyKey | None,
        events: Sequence[OutboxEvent],
    ) -> int:
        async with self.db.write() as conn:
            if idempotency is not None:
                # First, so that a second create with this key waits here (on PostgreSQL, on
                # the key's row) before doing any work, and then finds the first's batch.
                mine = (K.c.workspace_id == idempotency.workspace_id, K.c.api == idempotency.api, K.c.key == idempotency.key)
                await conn.execute(delete(K).where(*mine, K.c.created_at < idempotency.not_before))  # a day old: free
                await conn.execute(
                    insert(K).values(
                        workspace_id=idempotency.workspace_id, api=idempotency.api, key=idempotency.key,
                        body_hash=idempotency.body_hash, batch_id=record.id, created_at=record.created_at,
                    )
                )  # fmt: skip
            count = 0
            insert_requests = self.db.statement(
                "insert_requests",
                lambda: insert(R).values({name: bindparam(name) for name in ("batch_id", "idx", "custom_id", "model", "params")}),
            )
            async for chunk in chunks:
                if not chunk:
                    continue
                await insert_requests.executemany(
                    conn,
                    [
                        {
                            "batch_id": record.id,
                            "idx": line.index,
                            "custom_id": line.custom_id,
                            "model": line.model,
                            "params": line.params,
                        }
                        for line in chunk
                    ],
                )
                count += len(chunk)
            if queue_limit is not None:
                if self.db.is_postgres:
                    # Creates in one workspace take turns from here to commit: otherwise two
                    # could each count the queue without the other's batch and both pass.
                    await conn.execute(
                        select(func.pg_advisory_xact_lock(QUEUE_LOCK_SPACE, func.hashtext(record.workspace_id)))
                    )
                queued = (
                    await conn.execute(
                        select(func.coalesce(func.sum(B.c.request_count), 0)).where(
                            B.c.workspace_id == record.workspace_id, B.c.processing_status != "ended"
                        )
                    )
                ).scalar_one()
                if queued + count > queue_limit:
                    raise QueueFull(int(queued), count, queue_limit)
            values = {name: getattr(record, name) for name in BatchRecord.__slots__}
            values["request_count"] = count
            await conn.execute(insert(B).values(**values))
            if events:
                await self.webhooks.add_in(conn, events)
            record.request_count = count
            return count

    async def get_batch(self, batch_id: str, workspace_id: str, api: str = "anthropic") -> BatchRecord | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(*_BATCH_COLUMNS).where(B.c.id == batch_id, B.c.workspace_id == workspace_id, B.c.api == api)
                )
            ).first()
        return None if row is None else BatchRecord.from_row(row)

    async def list_batches(
        self, workspace_id: str, limit: int, after_id: str | None, before_id: str | None, api: str | None = "anthropic"
    ) -> tuple[list[BatchRecord], bool]:
        """Newest first. ``after_id``: the page just older than it; ``before_id``: the page
        just newer than it. Returns the page and whether more lie beyond it. ``api``: the
        batches of one Batch API (None: of both, for the console)."""
        query = select(*_BATCH_COLUMNS).where(B.c.workspace_id == workspace_id)
        if api is not None:
            query = query.where(B.c.api == api)
        if after_id is not None:
            query = query.where(B.c.id < after_id)
        if before_id is not None:
            query = query.where(B.c.id > before_id)
        backwards = before_id is not None and after_id is None
        query = query.order_by(B.c.id.asc() if backwards else B.c.id.desc()).limit(limit + 1)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        has_more = len(rows) > limit
        page = list(rows[:limit])
        if backwards:
            page.reverse()
        return [BatchRecord.from_row(r) for r in page], has_more

    async def list_both(
        self, workspace_id: str, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list[BatchRecord], bool]:
        """Batches of both APIs, newest first by creation time (their ids have different
        prefixes, so the id alone does not order them); ``after_id``/``before_id`` as in
        :meth:`list_batches`. For the console."""
        query = select(*_BATCH_COLUMNS).where(B.c.workspace_id == workspace_id)
        cursor = after_id or before_id
        if cursor is not None:
            async with self.db.read() as conn:
                at = (
                    await conn.execute(select(B.c.created_at).where(B.c.id == cursor, B.c.workspace_id == workspace_id))
                ).scalar()
            if at is None:
                return [], False
            if after_id is not None:
                query = query.where((B.c.created_at < at) | ((B.c.created_at == at) & (B.c.id < cursor)))
            else:
                query = query.where((B.c.created_at > at) | ((B.c.created_at == at) & (B.c.id > cursor)))
        backwards = before_id is not None and after_id is None
        order = (B.c.created_at.asc(), B.c.id.asc()) if backwards else (B.c.created_at.desc(), B.c.id.desc())
        async with self.db.read() as conn:
            rows = (await conn.execute(query.order_by(*order).limit(limit + 1))).all()
        has_more = len(rows) > limit
        page = list(rows[:limit])
        if backwards:
            page.reverse()
        return [BatchRecord.from_row(r) for r in page], has_more

    async def cancel_batch(
        self, batch_id: str, workspace_id: str, now: int, api: str = "anthropic"
    ) -> BatchRecord | None:
        """Move an in-progress batch to canceling; return the batch as it now stands."""
        mine = (B.c.id == batch_id, B.c.workspace_id == workspace_id, B.c.api == api)
        async with self.db.write() as conn:
            await conn.execute(
                update(B)
                .where(*mine, B.c.processing_status == "in_progress")
                .values(processing_status="canceling", cancel_initiated_at=now)
            )
            row = (await conn.execute(select(*_BATCH_COLUMNS).where(*mine))).first()
        return None if row is None else BatchRecord.from_row(row)

    async def delete_batch(self, batch_id: str, workspace_id: str) -> str:
        """Delete an ended batch and its requests. Returns 'deleted', 'missing' or the
        batch's status when it has not ended."""
        async with self.db.write() as conn:
            status = (
                await conn.execute(
                    select(B.c.processing_status)
                    .where(B.c.id == batch_id, B.c.workspace_id == workspace_id, B.c.api == "anthropic")
                    .with_for_update()
                )
            ).scalar()
            if status is None:
                return "missing"
            if status != "ended":
                return status
            await conn.execute(delete(R).where(R.c.batch_id == batch_id))
            await conn.execute(delete(B).where(B.c.id == batch_id))
            return "deleted"

    async def result_rows(
        self,
        batch_id: str,
        after_idx: int,
        limit: int,
        states: Sequence[RequestState] | None = None,
        *,
        max_bytes: int | None = None,
    ) -> list[ResultRow]:
        """One page of a batch's rows after ``after_idx``, in submission order: all of them
        (streaming the results out), or only those in ``states`` (the console's viewer).
        With ``max_bytes`` the page also stops before its results pass that many bytes
        (always at least one row): a page of large results is never held whole."""
        where = [R.c.batch_id == batch_id, R.c.idx > after_idx]
        if states is not None:
            where.append(R.c.state.in_([int(s) for s in states]))
        async with self.db.read() as conn:
            if max_bytes is not None:
                sizes = (
                    await conn.execute(
                        select(R.c.idx, func.coalesce(func.length(R.c.result), 0))
                        .where(*where)
                        .order_by(R.c.idx)
                        .limit(limit)
                    )
                ).all()
                if not sizes:
                    return []
                total, last = 0, sizes[0][0]
                for idx, size in sizes:
                    total += size
                    if total > max_bytes and idx != sizes[0][0]:
                        break
                    last = idx
                where.append(R.c.idx <= last)
            query = select(R.c.idx, R.c.custom_id, R.c.state, R.c.result).where(*where).order_by(R.c.idx).limit(limit)
            return [ResultRow(*row) for row in await conn.execute(query)]

    # -- the work queue ----------------------------------------------------------------

    async def state_counts(self, batch_id: str) -> dict[RequestState, int]:
        """Requests of one batch by state, live (the API shows these only at the end)."""
        async with self.db.read() as conn:
            return {RequestState(state): n for state, n in await conn.execute(_by_state(batch_id))}

    # The statements below run on every claim round: each is built and compiled once, with
    # its batch, bounds and clock as parameters (``now``: on SQLite only; PostgreSQL reads
    # its own clock), and run by the driver.

    def _now(self) -> Any:
        return PG_NOW if self.db.is_postgres else bindparam("now", type_=BigInteger)

    def _ready_now(self, batch: Any) -> tuple[Any, ...]:
        """The conditions of a request of ``batch`` (a column or a parameter) ready to run now."""
        return (R.c.batch_id == batch, R.c.state == RequestState.PENDING, R.c.next_attempt_at <= self._now())

    def _among_listed(self) -> tuple[Any, ...]:
        """``idx`` between ``lo`` and ``hi`` (a narrow index scan) and one of ``idxs``: an
        array on PostgreSQL, a JSON array read by ``json_each`` on SQLite (one statement
        text for any count)."""
        bounds = (R.c.idx >= bindparam("lo"), R.c.idx <= bindparam("hi"))
        if self.db.is_postgres:
            return (*bounds, R.c.idx == any_(bindparam("idxs", type_=ARRAY(Integer))))
        listed: Any = select(literal_column("value")).select_from(func.json_each(bindparam("idxs", type_=String)))
        return (*bounds, R.c.idx.in_(listed))

    def _listed(self, idxs: Sequence[int]) -> dict[str, Any]:
        listed: Any = list(idxs) if self.db.is_postgres else orjson.dumps(list(idxs)).decode()
        return {"lo": min(idxs), "hi": max(idxs), "idxs": listed}

    async def claimable_batches(self) -> list[ClaimableBatch]:
        """In-progress batches with a request ready to run, oldest first."""
        statement = self.db.statement(
            "claimable_batches",
            lambda: select(B.c.id, B.c.workspace_id, B.c.api_version, B.c.expires_at, B.c.endpoint, B.c.key_id)
            .where(B.c.processing_status == "in_progress", exists().where(*self._ready_now(B.c.id)))
            .order_by(B.c.id),
        )
        async with self.db.read() as conn:
            return [ClaimableBatch(*row) for row in await statement.execute(conn, {"now": self.clock()})]

    async def peek_ready(self, batch_id: str, limit: int, after_idx: int = -1) -> list[ReadyRow]:
        """The first ``limit`` requests of a batch after ``after_idx`` that are ready to run,
        without taking them: the engine picks which its routes can start now."""
        statement = self.db.statement(
            "peek_ready",
            lambda: select(R.c.idx, R.c.model, R.c.lease_losses)
            .where(*self._ready_now(bindparam("batch")), R.c.idx > bindparam("after"))
            .order_by(R.c.idx)
            .limit(bindparam("limit")),
        )
        values = {"batch": batch_id, "after": after_idx, "limit": limit, "now": self.clock()}
        async with self.db.read() as conn:
            return [ReadyRow(*row) for row in await statement.execute(conn, values)]

    async def claim(self, batch: ClaimableBatch, owner: str, idxs: Sequence[int], lease_us: int) -> list[ClaimedRequest]:
        """Lease these requests of one in-progress batch for ``lease_us``: those still ready
        (another engine may have taken some meanwhile; it is skipped, not waited for)."""
        if not idxs:
            return []
        statement = self.db.statement(
            "claim",
            lambda: self._lease_statement(
                select(R.c.batch_id, R.c.idx)
                .where(*self._ready_now(bindparam("batch")), *self._among_listed())
                .with_for_update(skip_locked=True)
            ),
        )
        return await self._lease(batch, owner, statement, lease_us, self._listed(idxs))

    async def claim_next(
        self, batch: ClaimableBatch, owner: str, limit: int, lease_us: int, *, below_losses: int
    ) -> list[ClaimedRequest]:
        """Lease the next ``limit`` ready requests of a batch that lost their worker fewer than
        ``below_losses`` times: one statement, for an engine with no route bound to respect."""
        statement = self.db.statement(
            "claim_next",
            lambda: self._lease_statement(
                select(R.c.batch_id, R.c.idx)
                .where(*self._ready_now(bindparam("batch")), R.c.lease_losses < bindparam("below"))
                .order_by(R.c.idx)
                .limit(bindparam("limit"))
                .with_for_update(skip_locked=True)
            ),
        )
        return await self._lease(batch, owner, statement, lease_us, {"limit": limit, "below": below_losses})

    def _lease_statement(self, picking: Any) -> Any:
        """Lease the rows ``picking`` selects (of batch ``batch``, if it is still in progress)
        to ``owner`` for ``lease`` µs, returning what the engine needs to run them."""
        picked = _picked(picking)
        still_in_progress = exists().where(B.c.id == bindparam("batch"), B.c.processing_status == "in_progress")
        return (
            update(R)
            .where(
                R.c.batch_id == picked.c.batch_id,
                R.c.idx == picked.c.idx,
                R.c.state == RequestState.PENDING,
                still_in_progress,
            )
            .values(
                state=RequestState.RUNNING,
                lease_owner=bindparam("owner"),
                lease_expires_at=self._now() + bindparam("lease", type_=BigInteger),
                attempts=R.c.attempts + 1,
            )
            .returning(R.c.idx, R.c.custom_id, R.c.params, R.c.attempts, R.c.lease_losses, R.c.model)
        )

    async def _lease(
        self, batch: ClaimableBatch, owner: str, statement: DriverStatement, lease_us: int, values: dict[str, Any]
    ) -> list[ClaimedRequest]:
        values = {**values, "batch": batch.id, "owner": owner, "lease": lease_us, "now": self.clock()}
        async with self.db.write() as conn:
            rows = (await statement.execute(conn, values)).all()
        b = batch
        claimed = [
            ClaimedRequest(
                b.id, idx, custom_id, params, attempts, b.api_version, b.expires_at, b.workspace_id, losses, model,
                b.endpoint, b.key_id,
            )
            for idx, custom_id, params, attempts, losses, model in rows
        ]  # fmt: skip
        claimed.sort(key=lambda c: c.idx)
        return claimed

    async def renew_leases(self, owner: str, held: Sequence[Attempt], lease_us: int) -> list[Attempt]:
        """Extend the leases of running attempts; return those whose fence failed."""
        if not held:
            return []
        statement = update(R).where(*_fence()).values(lease_expires_at=self._db_now() + lease_us)

        def params(attempts: Iterable[Attempt]) -> list[dict[str, Any]]:
            return [{"b": b, "i": i, "a": a, "o": owner} for b, i, a in attempts]

        renewing = await self._fenced(owner, held, lambda conn, attempts: conn.execute(statement, params(attempts)))
        return [a for a in held if a not in renewing]

    async def _fenced(
        self,
        owner: str,
        attempts: Sequence[Attempt],
        write: Callable[[AsyncConnection, Sequence[Attempt]], Awaitable[Any]],
        then: Callable[[AsyncConnection, set[Attempt]], Awaitable[Any]] | None = None,
        lock: Sequence[str] = (),
    ) -> set[Attempt]:
        """Run ``write`` (one fenced executemany) for the attempts that still hold their lease,
        in one transaction, then ``then`` (given the attempts written); return those.

        On SQLite (one writer at a time) it first writes all of them: when every row matched,
        as is usual, no attempt was stale and the fence needed no read of its own; otherwise
        that transaction is rolled back and the held ones are read first. On PostgreSQL the
        held rows are read, and locked, first."""
        if not self.db.is_postgres:
            try:
                async with self.db.write() as conn:
                    result = await write(conn, attempts)
                    if result.rowcount != len(attempts):
                        raise _SomeStale
                    if then is not None:
                        await then(conn, set(attempts))
                return set(attempts)
            except _SomeStale:
                pass
        async with self.db.write() as conn:
            await self._lock_batches(conn, lock)
            held = await _still_held(self, conn, owner, attempts)
            if held:
                await write(conn, [a for a in attempts if a in held])
            if then is not None:
                await then(conn, held)
        return held

    async def release(self, owner: str, held: Sequence[Attempt]) -> None:
        """Give claimed requests back to the queue untouched (a clean shutdown): they are
        claimable at once, and the attempt they were charged is refunded."""
        if not held:
            return
        statement = (
            update(R)
            .where(*_fence())
            .values(state=RequestState.PENDING, lease_owner=None, lease_expires_at=None, attempts=R.c.attempts - 1)
        )
        async with self.db.write() as conn:
            await conn.execute(statement, [{"b": b, "i": i, "a": a, "o": owner} for b, i, a in held])

    async def finish(self, owner: str, outcomes: Sequence[FinishedRequest]) -> Finished:
        """Write outcomes of leased requests, each fenced by its attempt; end every batch
        left with nothing open. Outcomes whose fence fails are reported, not written."""
        if not outcomes:
            return Finished()
        batch_ids = sorted({o.batch_id for o in outcomes})
        now = self.clock()
        driver = self.db.statement(
            "finish",
            lambda: update(R)
            .where(*_fence())
            .values(
                state=bindparam("state"),
                result=bindparam("result"),
                finished_at=bindparam("finished"),
                next_attempt_at=self._now() + bindparam("delay", type_=BigInteger),
                lease_owner=None,
                lease_expires_at=None,
            ),
        )
        by_attempt = {o.attempt: o for o in outcomes}

        async def write(conn: AsyncConnection, attempts: Sequence[Attempt]) -> Any:
            return await driver.executemany(
                conn,
                [
                    {
                        "b": o.batch_id,
                        "i": o.idx,
                        "a": o.attempts,
                        "o": owner,
                        "state": int(o.state),
                        "result": o.result,
                        "finished": None if o.state == RequestState.PENDING else now,
                        "delay": o.retry_delay_us,
                        "now": now,
                    }
                    for o in (by_attempt[a] for a in attempts)
                ],
            )

        ended: list[str] = []

        async def finalize(conn: AsyncConnection, written: set[Attempt]) -> None:
            ended[:] = [b for b in batch_ids if await self._finalize_if_done(conn, b, now)]
            # Usage goes with the results that were written, in their transaction: a result
            # and its tokens are counted together or not at all. Last, so the busy usage rows
            # are locked for the shortest time.
            used = [o.usage for a, o in by_attempt.items() if o.usage is not None and a in written]
            await self.usage.add_in(conn, merge(used))

        held = await self._fenced(owner, list(by_attempt), write, finalize, lock=batch_ids)
        return Finished(ended, [o.attempt for o in outcomes if o.attempt not in held])

    async def _lock_batches(self, conn: AsyncConnection, batch_ids: Sequence[str]) -> None:
        """Serialize finishers of the same batch (PostgreSQL); SQLite has one writer anyway."""
        if self.db.is_postgres and batch_ids:
            await conn.execute(select(B.c.id).where(B.c.id.in_(batch_ids)).order_by(B.c.id).with_for_update())

    async def _finalize_if_done(self, conn: AsyncConnection, batch_id: str, now: int) -> bool:
        still_open = (
            await conn.execute(
                select(literal(1)).where(R.c.batch_id == batch_id, R.c.state.in_([int(s) for s in OPEN_STATES])).limit(1)
            )
        ).first()
        if still_open is not None:
            return False
        counts = {RequestState(state).result_type: n for state, n in await conn.execute(_by_state(batch_id))}
        ended = (
            await conn.execute(
                update(B)
                .where(B.c.id == batch_id, B.c.processing_status != "ended")
                .values(
                    processing_status="ended",
                    ended_at=now,
                    succeeded=counts.get("succeeded", 0),
                    errored=counts.get("errored", 0),
                    canceled=counts.get("canceled", 0),
                    expired=counts.get("expired", 0),
                )
                .returning(B.c.workspace_id, B.c.api)
            )
        ).first()
        if ended is None:
            return False
        if ended.api == "anthropic":
            # Its webhook event, in the transaction that ends it (an OpenAI batch's comes when
            # its files are written: only then does its API call it ended).
            event_id = new_event_id(now // 1000)
            payload = hooks.message_batch_ended(event_id, now, batch_id, ended.workspace_id, counts)
            await self.webhooks.add_in(
                conn, [OutboxEvent(event_id, hooks.MESSAGE_BATCH_ENDED, ended.workspace_id, batch_id, payload, now)]
            )
        return True

    # -- sweeps ------------------------------------------------------------------------

    async def sweep_needed(self, now: int, archive_cutoff: int | None) -> bool:
        """One cheap read: is there anything for the sweeper to do? (An idle database is
        asked this and nothing more: built and compiled once, it costs the loop a database
        round trip; built each time, five EXISTS clauses cost it milliseconds.)"""
        archive = archive_cutoff is not None
        statement = self.db.statement(
            "sweep_needed_with_archive" if archive else "sweep_needed", lambda: self._sweep_checks(archive)
        )
        async with self.db.read() as conn:
            (row,) = (await statement.execute(conn, {"now": now, "at": now, "cutoff": archive_cutoff or 0})).all()
        return any(row)

    def _sweep_checks(self, archive: bool) -> Any:
        checks = [
            exists().where(R.c.state == RequestState.RUNNING, R.c.lease_expires_at < self._now()),
            exists().where(*_to_close(bindparam("at", type_=BigInteger))),
            exists().where(*_unfinalized()),
        ]
        if archive:
            cutoff = bindparam("cutoff", type_=BigInteger)
            checks.append(
                exists().where(B.c.archived_at.is_(None), B.c.processing_status == "ended", B.c.created_at <= cutoff)
            )
            # rows an interrupted archive sweep left behind
            checks.append(exists().where(B.c.archived_at.is_not(None), exists().where(R.c.batch_id == B.c.id)))
        return select(*[c.label(f"c{i}") for i, c in enumerate(checks)])

    async def recover_leases(
        self, decide: Callable[[LostLease], FinishedRequest], *, every_running: bool = False, chunk: int = 5000
    ) -> Recovered:
        """Requests whose holder stopped renewing its lease: each counts one more lease loss,
        and ``decide`` (the lifecycle's policy) says what becomes of it. ``every_running``
        takes every running request (an engine that knows it is the only one, starting
        after a crash)."""
        done = Recovered()
        while True:
            lapsed = [R.c.state == RequestState.RUNNING]
            if not every_running:
                lapsed.append(R.c.lease_expires_at < self._db_now())
            query = (
                select(R.c.batch_id, R.c.idx, R.c.attempts, R.c.lease_losses)
                .where(*lapsed)
                .order_by(R.c.batch_id, R.c.idx)
                .limit(chunk)
                .with_for_update(skip_locked=True)
            )
            async with self.db.write() as conn:
                found = (await conn.execute(query)).all()
                if not found:
                    return done
                decisions = [decide(LostLease(r.batch_id, r.idx, r.attempts, r.lease_losses + 1)) for r in found]
                batch_ids = sorted({d.batch_id for d in decisions})
                await self._lock_batches(conn, batch_ids)
                now = self.clock()
                await conn.execute(
                    update(R)
                    .where(
                        R.c.batch_id == bindparam("b"),
                        R.c.idx == bindparam("i"),
                        R.c.attempts == bindparam("a"),
                        R.c.state == RequestState.RUNNING,
                    )
                    .values(
                        state=bindparam("state"),
                        result=bindparam("result"),
                        finished_at=bindparam("finished"),
                        lease_losses=R.c.lease_losses + 1,
                        lease_owner=None,
                        lease_expires_at=None,
                    ),
                    [
                        {
                            "b": d.batch_id,
                            "i": d.idx,
                            "a": d.attempts,
                            "state": int(d.state),
                            "result": d.result,
                            "finished": None if d.state == RequestState.PENDING else now,
                        }
                        for d in decisions
                    ],
                )
                closed = sorted({d.batch_id for d in decisions if d.state != RequestState.PENDING})
                done.requeued += sum(1 for d in decisions if d.state == RequestState.PENDING)
                done.ended_requests += sum(1 for d in decisions if d.state != RequestState.PENDING)
                done.ended += [b for b in closed if await self._finalize_if_done(conn, b, now)]
            if len(found) < chunk:
                return done

    async def batches_to_close(self, now: int) -> list[tuple[str, str]]:
        """Open batches that are canceling or past expiry: (id, what to do)."""
        query = select(B.c.id, B.c.expires_at).where(*_to_close(now))
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [(r.id, "expire" if r.expires_at <= now else "cancel") for r in rows]

    async def close_open_requests(self, batch_id: str, now: int, *, expire: bool, chunk: int = 5000) -> bool:
        """Cancel a canceling batch's pending requests (running ones are the engine's to
        end), or expire every open request of an expired batch; end the batch when nothing
        is open. Works in chunks so a 100,000-request batch never holds one long lock.
        Returns True when the batch ended."""
        new_state = RequestState.EXPIRED if expire else RequestState.CANCELED
        targets = [int(s) for s in OPEN_STATES] if expire else [int(RequestState.PENDING)]
        while True:
            picked = _picked(
                select(R.c.batch_id, R.c.idx)
                .where(R.c.batch_id == batch_id, R.c.state.in_(targets))
                .order_by(R.c.idx)
                .limit(chunk)
                .with_for_update(skip_locked=True)
            )
            async with self.db.write() as conn:
                await self._lock_batches(conn, [batch_id])
                # Counted from RETURNING: SQLite reports no rowcount for a statement that
                # begins with WITH, and a loop on it would stop after one chunk.
                closed = (
                    await conn.execute(
                        update(R)
                        .where(R.c.batch_id == picked.c.batch_id, R.c.idx == picked.c.idx, R.c.state.in_(targets))
                        .values(state=new_state, finished_at=now, lease_owner=None, lease_expires_at=None, result=None)
                        .returning(R.c.idx)
                    )
                ).all()
                if len(closed) < chunk:
                    return await self._finalize_if_done(conn, batch_id, self.clock())

    async def archive(self, now: int, created_before: int, chunk: int = 5000) -> list[str]:
        """Set ``archived_at`` on ended batches created before the cutoff, then drop the
        request rows of archived batches (their results are no longer served). Rows left
        by an interrupted sweep are dropped by the next one."""
        async with self.db.write() as conn:
            newly = (
                await conn.execute(
                    update(B)
                    .where(
                        B.c.archived_at.is_(None),
                        B.c.processing_status == "ended",
                        B.c.created_at <= created_before,
                        (B.c.api != "openai") | B.c.finalized_at.is_not(None),
                    )
                    .values(archived_at=now)
                    .returning(B.c.id)
                )
            ).all()
        has_rows = exists().where(R.c.batch_id == B.c.id)
        async with self.db.read() as conn:
            leftover = (await conn.execute(select(B.c.id).where(B.c.archived_at.is_not(None), has_rows))).all()
        for (batch_id,) in leftover:
            while True:
                picked = _picked(select(R.c.idx).where(R.c.batch_id == batch_id).limit(chunk))
                async with self.db.write() as conn:
                    dropped = (
                        await conn.execute(
                            delete(R)
                            .where(R.c.batch_id == batch_id, R.c.idx.in_(select(picked.c.idx)))
                            .returning(R.c.idx)
                        )
                    ).all()
                if len(dropped) < chunk:
                    break
        return [r.id for r in newly]

    # -- OpenAI batches' files ------------------------------------------------------------

    async def unfinalized(self) -> list[BatchRecord]:
        """Ended OpenAI batches whose output and error files are not written yet."""
        async with self.db.read() as conn:
            rows = (await conn.execute(select(*_BATCH_COLUMNS).where(*_unfinalized()).order_by(B.c.id))).all()
        return [BatchRecord.from_row(r) for r in rows]

    async def set_outputs(
        self,
        batch_id: str,
        output_file_id: str | None,
        error_file_id: str | None,
        details: bytes,
        now: int,
        events: Sequence[OutboxEvent] = (),
    ) -> bool:
        """Record an ended OpenAI batch's files, once, with its webhook ``events``: False when
        another writer did first."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(B)
                .where(B.c.id == batch_id, *_unfinalized())
                .values(output_file_id=output_file_id, error_file_id=error_file_id, details=details, finalized_at=now)
            )
            if result.rowcount != 1:
                return False
            if events:
                await self.webhooks.add_in(conn, events)
        return True

    async def live_counts(self, batch_ids: Sequence[str]) -> dict[str, dict[RequestState, int]]:
        """Requests by state of each of these (open) batches, as they stand now."""
        if not batch_ids:
            return {}
        counts: dict[str, dict[RequestState, int]] = {b: {} for b in batch_ids}
        query = (
            select(R.c.batch_id, R.c.state, func.count())
            .where(R.c.batch_id.in_(list(batch_ids)))
            .group_by(R.c.batch_id, R.c.state)
        )
        async with self.db.read() as conn:
            for batch_id, state, n in await conn.execute(query):
                counts[batch_id][RequestState(state)] = n
        return counts

    async def batch_states(self, batch_ids: Iterable[str]) -> dict[str, str]:
        """The processing status of each of these batches that still exists."""
        wanted = list(set(batch_ids))
        if not wanted:
            return {}
        async with self.db.read() as conn:
            rows = (await conn.execute(select(B.c.id, B.c.processing_status).where(B.c.id.in_(wanted)))).all()
        return {r.id: r.processing_status for r in rows}


    async def queue_figures(self) -> QueueFigures:
        """Counts for /metrics: rows of open batches by state (through the batch index),
        the final tallies of ended ones, and batches by status."""
        open_ids = select(B.c.id).where(B.c.processing_status != "ended").scalar_subquery()
        by_state: dict[str, int] = {s.result_type: 0 for s in RequestState}
        async with self.db.read() as conn:
            for state, n in await conn.execute(
                select(R.c.state, func.count()).where(R.c.batch_id.in_(open_ids)).group_by(R.c.state)
            ):
                by_state[RequestState(state).result_type] += n
            ended = (
                await conn.execute(
                    select(
                        func.coalesce(func.sum(B.c.succeeded), 0),
                        func.coalesce(func.sum(B.c.errored), 0),
                        func.coalesce(func.sum(B.c.canceled), 0),
                        func.coalesce(func.sum(B.c.expired), 0),
                    ).where(B.c.processing_status == "ended", B.c.archived_at.is_(None))
                )
            ).one()
            batches = {status: n for status, n in await conn.execute(
                select(B.c.processing_status, func.count()).group_by(B.c.processing_status)
            )}
        for name, n in zip(("succeeded", "errored", "canceled", "expired"), ended, strict=True):
            by_state[name] += int(n)
        return QueueFigures(by_state, by_state["pending"], batches)
