"""Store-level guarantees that need a real database: one sweeper at a time, and the
lease fence that keeps a stale engine from writing a result."""

from __future__ import annotations

import asyncio
import io

import orjson

from batchyard.batches import Batches, ClaimBudget
from batchyard.config import Settings
from batchyard.store import migrate
from batchyard.store.batches import BatchStore, FinishedRequest
from batchyard.store.database import Database, parse_database_url
from batchyard.store.notify import Notifier
from batchyard.store.schema import RequestState
from support.databases import create_postgres_database, drop_postgres_database


def test_only_one_process_holds_the_sweep_lock() -> None:
    url = create_postgres_database()

    async def scenario() -> tuple[bool, bool, bool]:
        first, second = Database(parse_database_url(url)), Database(parse_database_url(url))
        try:
            async with first.exclusive(42) as a:
                async with second.exclusive(42) as b:
                    pass
            async with second.exclusive(42) as c:
                pass
            return a, b, c
        finally:
            await first.close()
            await second.close()

    try:
        assert asyncio.run(scenario()) == (True, False, True)
    finally:
        drop_postgres_database(url)


def test_stale_lease_holder_cannot_write(fresh_database_url: str) -> None:
    async def scenario() -> None:
        db = Database(parse_database_url(fresh_database_url))
        await migrate.upgrade(db)
        try:
            batches = Batches(BatchStore(db), Settings(), Notifier())
            store = batches.store
            body = orjson.dumps({"requests": [{"custom_id": "only", "params": {"model": "m"}}]})
            record = await batches.create("default", "2023-06-01", io.BytesIO(body))
            (first,) = await batches.claim_ready("engine-a", ClaimBudget.unbounded(10))
            await store.recover_leases(batches.policy.after_lost_lease, every_running=True)  # its lease lapsed
            (second,) = await batches.claim_ready("engine-a", ClaimBudget.unbounded(10))  # same owner name, new attempt
            assert second.attempts == first.attempts + 1
            assert await store.renew_leases("engine-a", [first.attempt, second.attempt], 10**6) == [first.attempt]
            stale = FinishedRequest(record.id, first.idx, first.attempts, RequestState.SUCCEEDED, b'{"stale":1}')
            by_stale = await store.finish("engine-a", [stale])
            assert by_stale.ended == [] and by_stale.stale == [first.attempt]
            fresh = FinishedRequest(record.id, second.idx, second.attempts, RequestState.SUCCEEDED, b'{"fresh":1}')
            by_fresh = await store.finish("engine-a", [fresh])
            assert by_fresh.ended == [record.id] and by_fresh.stale == []
            again = await store.finish("engine-a", [fresh])  # a replay after the end changes nothing
            assert again.ended == [] and again.stale == [second.attempt]
            rows = await store.result_rows(record.id, -1, 10)
            assert rows[0].result == b'{"fresh":1}'
        finally:
            await db.close()

    asyncio.run(scenario())


def test_two_engines_finishing_the_last_two_requests_end_the_batch_once() -> None:
    """Two processes (two pools) write the last two outcomes at the same moment, many times
    over: the batch ends exactly once, with both results counted."""
    url = create_postgres_database()

    async def one_round(a: Batches, b: Batches) -> tuple[int, str, int]:
        body = orjson.dumps({"requests": [{"custom_id": f"r{i}", "params": {"model": "m"}} for i in range(2)]})
        record = await a.create("default", "2023-06-01", io.BytesIO(body))
        first = await a.claim_ready("engine-a", ClaimBudget.unbounded(1))
        second = await b.claim_ready("engine-b", ClaimBudget.unbounded(1))
        assert len(first) == 1 and len(second) == 1 and first[0].idx != second[0].idx
        outcome = lambda c: FinishedRequest(c.batch_id, c.idx, c.attempts, RequestState.SUCCEEDED, b"{}")  # noqa: E731
        done_a, done_b = await asyncio.gather(
            a.store.finish("engine-a", [outcome(first[0])]), b.store.finish("engine-b", [outcome(second[0])])
        )
        final = await a.store.get_batch(record.id, "default")
        return len(done_a.ended) + len(done_b.ended), final.processing_status, final.succeeded

    async def scenario() -> list[tuple[int, str, int]]:
        db_a, db_b = Database(parse_database_url(url)), Database(parse_database_url(url))
        await migrate.upgrade(db_a)
        a = Batches(BatchStore(db_a), Settings(), Notifier())
        b = Batches(BatchStore(db_b), Settings(), Notifier())
        try:
            return [await one_round(a, b) for _ in range(25)]
        finally:
            await db_a.close()
            await db_b.close()

    try:
        rounds = asyncio.run(scenario())
    finally:
        drop_postgres_database(url)
    assert rounds == [(1, "ended", 2)] * 25


def test_an_idempotency_key_names_its_batch_for_a_day_then_is_free(fresh_database_url: str) -> None:
    from batchyard.idempotency import IDEMPOTENCY_TTL_US, idempotency_key
    from batchyard.protocol.errors import ApiError

    async def scenario() -> None:
        db = Database(parse_database_url(fresh_database_url))
        await migrate.upgrade(db)
        try:
            now = [10**15]
            store = BatchStore(db, clock=lambda: now[0])
            batches = Batches(store, Settings(), Notifier())
            body = orjson.dumps({"requests": [{"custom_id": "only", "params": {"model": "m"}}]})

            def key(digest: str = "d1") -> object:
                return idempotency_key("nightly", "default", "anthropic", digest, now[0])

            first = await batches.create("default", "2023-06-01", io.BytesIO(body), idempotency=key())  # type: ignore[arg-type]
            now[0] += IDEMPOTENCY_TTL_US - 1
            again = await batches.create("default", "2023-06-01", io.BytesIO(body), idempotency=key())  # type: ignore[arg-type]
            assert again.id == first.id
            try:
                await batches.create("default", "2023-06-01", io.BytesIO(body), idempotency=key("d2"))  # type: ignore[arg-type]
                raise AssertionError("a reused key with another body must be refused")
            except ApiError as exc:
                assert exc.status == 409 and not exc.retryable
            now[0] += 2  # a day and a microsecond after the first: the key is free again
            later = await batches.create("default", "2023-06-01", io.BytesIO(body), idempotency=key("d2"))  # type: ignore[arg-type]
            assert later.id != first.id
            await store.forget_idempotency_keys(now[0] + 1)
            assert await store.idempotent_batch(key("d2")) is None  # type: ignore[arg-type]
        finally:
            await db.close()

    asyncio.run(scenario())
