"""The engine in this process over a real store, on SQLite and PostgreSQL: attempts, lost
leases, cancels and expiry landing on calls in flight, poison lines, one clock for leases.

Each test lines up its interleaving with a backend whose calls wait for the test
(tests/support/harness.py), so none of them depends on timing."""

from __future__ import annotations

import asyncio
import io

import orjson
from sqlalchemy import text

from batchyard.batches import Batches, ClaimBudget
from batchyard.config import Settings
from batchyard.outcomes import lease_lost_message
from batchyard.store import migrate
from batchyard.store.batches import BatchStore
from batchyard.store.database import Database, parse_database_url
from batchyard.store.notify import Notifier
from batchyard.store.schema import RequestState
from support.databases import create_postgres_database, drop_postgres_database
from support.harness import FakeClock, Harness, until


async def rows(h: Harness, batch_id: str) -> list[tuple[int, int, int, bytes | None, int]]:
    async with h.db.read() as conn:
        result = await conn.execute(
            text(
                "SELECT idx, state, attempts, result, lease_losses FROM batch_requests "
                "WHERE batch_id = :b ORDER BY idx"
            ),
            {"b": batch_id},
        )
        return [tuple(r) for r in result]


async def lapse_leases(db: Database) -> None:
    """As if the holder had stopped renewing long ago (a database outage, a dead worker)."""
    async with db.write() as conn:
        await conn.execute(text("UPDATE batch_requests SET lease_expires_at = 0 WHERE state = 1"))


async def lease_expiry(h: Harness, batch_id: str) -> int:
    async with h.db.read() as conn:
        result = await conn.execute(text("SELECT lease_expires_at FROM batch_requests WHERE batch_id = :b"), {"b": batch_id})
        return result.scalar_one()


async def ended(h: Harness, batch_id: str) -> bool:
    return (await h.batches.get("default", batch_id)).processing_status == "ended"


def test_a_stale_attempt_finishing_late_leaves_the_new_attempt_alone(fresh_database_url: str) -> None:
    """The same engine claims a request again after its first attempt's lease lapsed; the
    first attempt then finishes. Its outcome is refused by the fence and counted as stale,
    and the second attempt keeps its place, its task and its heartbeat."""

    async def scenario() -> None:
        h = await Harness(fresh_database_url).open()
        try:
            batch = await h.create(1)
            await h.start()
            (first,) = await h.backend.wait_calls(1)
            await lapse_leases(h.db)
            await h.batches.sweep()  # gives the request back (and says so: the engine claims it again)
            _, second = await h.backend.wait_calls(2)
            old, new = (batch.id, 0, 1), (batch.id, 0, 2)
            assert old in h.engine.inflight and new in h.engine.inflight

            h.backend.release(first, "the stale answer")
            await until(lambda: h.stale("finish") == 1, what="the stale outcome to be refused")
            assert old not in h.engine.inflight
            assert new in h.engine.inflight
            (running,) = [r for r in h.engine.inflight if r.request.attempt == new]
            assert running.task is not None and not running.task.done()
            assert h.metrics.results.values == {}  # a stale outcome is not a result

            before = await lease_expiry(h, batch.id)
            await h.engine.heartbeat.beat()  # the new attempt's lease is still renewed
            assert await lease_expiry(h, batch.id) > before
            assert h.stale() == 1

            h.backend.release(second, "the fresh answer")
            await until(lambda: ended(h, batch.id), what="the batch to end")
            ((_, state, attempts, result, losses),) = await rows(h, batch.id)
            assert (state, attempts, losses) == (RequestState.SUCCEEDED, 2, 1)
            assert b"the fresh answer" in result and b"the stale answer" not in result
            assert len(h.engine.inflight) == 0
        finally:
            await h.close()

    asyncio.run(scenario())


def test_a_lease_lost_while_running_stops_the_call(fresh_database_url: str) -> None:
    """The heartbeat finds an attempt's lease gone: its call is stopped at once, not run to
    the end for nothing."""

    async def scenario() -> None:
        h = await Harness(fresh_database_url).open()
        try:
            batch = await h.create(1)
            await h.start()
            (call,) = await h.backend.wait_calls(1)
            await lapse_leases(h.db)
            await h.batches.store.recover_leases(h.batches.policy.after_lost_lease)  # another sweeper took it back
            await h.engine.heartbeat.beat()
            await until(lambda: call.cancelled, what="the call to be stopped")
            assert h.stale("renew") == 1
            assert (batch.id, 0, 1) not in h.engine.inflight
        finally:
            await h.close()

    asyncio.run(scenario())


def test_cancel_stops_calls_in_flight_and_keeps_finished_results(fresh_database_url: str) -> None:
    async def scenario() -> None:
        h = await Harness(fresh_database_url).open()
        try:
            batch = await h.create(6)
            await h.start()
            calls = await h.backend.wait_calls(6)
            for call in calls[:2]:
                h.backend.release(call, "done before the cancel")
            await until(lambda: h.engine.completed == 2, what="two results written")
            canceling = await h.batches.cancel("default", batch.id)
            assert canceling.processing_status == "canceling"
            await until(lambda: ended(h, batch.id), within=5, what="the canceled batch to end")
            assert all(call.cancelled for call in calls[2:])
            final = await h.batches.get("default", batch.id)
            assert (final.succeeded, final.canceled, final.errored) == (2, 4, 0)
            states = [state for _, state, *_ in await rows(h, batch.id)]
            assert sorted(states) == [RequestState.SUCCEEDED] * 2 + [RequestState.CANCELED] * 4
            assert h.stale() == 0
        finally:
            await h.close()

    asyncio.run(scenario())


def test_expiry_stops_calls_in_flight(fresh_database_url: str) -> None:
    async def scenario() -> None:
        h = await Harness(fresh_database_url).open()
        try:
            batch = await h.create(3)
            await h.start()
            calls = await h.backend.wait_calls(3)
            h.clock.advance(24 * 3600 + 1)  # past expires_at
            await h.batches.sweep()
            await until(lambda: all(c.cancelled for c in calls), within=5, what="the calls to be stopped")
            final = await h.batches.get("default", batch.id)
            assert final.processing_status == "ended" and final.expired == 3
            assert h.stale("closed") == 3
            assert len(h.engine.inflight) == 0
        finally:
            await h.close()

    asyncio.run(scenario())


def test_the_engine_holds_only_what_its_routes_can_start(fresh_database_url: str) -> None:
    """A route of two slots: the engine holds its two running calls and two next in line,
    not the whole batch, so a crash charges lost leases to those four at most."""

    async def scenario() -> None:
        h = await Harness(fresh_database_url, max_concurrency=2).open()
        try:
            batch = await h.create(20)
            await h.start()
            first = await h.backend.wait_calls(2)
            await until(lambda: len(h.engine.inflight) == 4, what="two queued behind the two running")
            running = [r for r in await rows(h, batch.id) if r[1] == RequestState.RUNNING]
            assert len(running) == 4
            for call in first:
                h.backend.release(call)
            released = 2
            while released < 20:
                calls = await h.backend.wait_calls(released + 1)
                h.backend.release(calls[released])
                released += 1
                assert len(h.engine.inflight) <= 4
            await until(lambda: ended(h, batch.id), what="the batch to end")
            assert (await h.batches.get("default", batch.id)).succeeded == 20
        finally:
            await h.close()

    asyncio.run(scenario())


def _store_batches(url: str, clock: FakeClock | None = None, **engine: object) -> tuple[Database, Batches]:
    db = Database(parse_database_url(url))
    settings = Settings()
    settings.engine = settings.engine.model_copy(update=engine)
    return db, Batches(BatchStore(db, clock=clock or FakeClock()), settings, Notifier())


def test_a_poison_line_ends_errored_and_suspects_run_one_at_a_time(fresh_database_url: str) -> None:
    async def scenario() -> None:
        db, batches = _store_batches(fresh_database_url)
        await migrate.upgrade(db)
        try:
            body = {"requests": [{"custom_id": f"p{i}", "params": {"model": "m"}} for i in range(3)]}
            batch = await batches.create("default", "2023-06-01", io.BytesIO(orjson.dumps(body)))
            for _ in (1, 2):  # a worker dies holding all three, twice
                assert len(await batches.claim_ready("crashing", ClaimBudget.unbounded(10))) == 3
                await lapse_leases(db)
                await batches.sweep()
            # Two losses each: suspects now, claimed one at a time.
            budget = ClaimBudget(10, {}, lambda _m: None, suspects=1)
            (suspect,) = await batches.claim_ready("careful", budget)
            assert suspect.lease_losses == 2
            assert await batches.claim_ready("careful", ClaimBudget(10, {}, lambda _m: None, suspects=0)) == []
            await lapse_leases(db)
            await batches.sweep()  # the third loss: a poison line
            rows_now = {}
            async with db.read() as conn:
                for custom_id, state, result in await conn.execute(
                    text("SELECT custom_id, state, result FROM batch_requests WHERE batch_id = :b"), {"b": batch.id}
                ):
                    rows_now[custom_id] = (state, result)
            state, result = rows_now[suspect.custom_id]
            assert state == RequestState.ERRORED
            assert orjson.loads(result)["error"]["error"] == {"type": "api_error", "message": lease_lost_message(3)}
            assert sorted(s for s, _ in rows_now.values()) == [RequestState.PENDING] * 2 + [RequestState.ERRORED]
        finally:
            await db.close()

    asyncio.run(scenario())


def test_closing_a_large_batch_does_not_stop_after_one_chunk(fresh_database_url: str) -> None:
    """SQLite reports no rowcount for a statement that starts with WITH: a loop reading it
    closed one chunk per sweep (100,000 requests took 95 s to end after a cancel)."""

    async def scenario() -> None:
        db, batches = _store_batches(fresh_database_url)
        await migrate.upgrade(db)
        try:
            body = {"requests": [{"custom_id": f"c{i}", "params": {"model": "m"}} for i in range(250)]}
            batch = await batches.create("default", "2023-06-01", io.BytesIO(orjson.dumps(body)))
            await batches.store.cancel_batch(batch.id, "default", batches.clock())
            assert await batches.store.close_open_requests(batch.id, batches.clock(), expire=False, chunk=100)
            final = await batches.get("default", batch.id)
            assert (final.processing_status, final.canceled) == ("ended", 250)
        finally:
            await db.close()

    asyncio.run(scenario())


def test_leases_are_judged_by_the_database_clock() -> None:
    """PostgreSQL: hosts whose clocks are off by minutes neither steal a live lease nor keep
    a dead one."""
    url = create_postgres_database()

    async def scenario() -> None:
        ahead_clock, behind_clock = FakeClock(), FakeClock()
        ahead_clock.advance(600)
        behind_clock.advance(-600)
        db, batches = _store_batches(url, lease=60.0)
        ahead_db, ahead = _store_batches(url, clock=ahead_clock, lease=60.0)
        behind_db, behind = _store_batches(url, clock=behind_clock, lease=60.0)
        await migrate.upgrade(db)
        try:
            body = {"requests": [{"custom_id": "only", "params": {"model": "m"}}]}
            batch = await batches.create("default", "2023-06-01", io.BytesIO(orjson.dumps(body)))
            (claimed,) = await batches.claim_ready("engine-a", ClaimBudget.unbounded(1))
            await ahead.sweep()  # ten minutes ahead: the 60 s lease still looks live to the database
            assert await batches.store.renew_leases("engine-a", [claimed.attempt], 60_000_000) == []
            async with db.write() as conn:  # the lease ran out a second ago, by the database's clock
                await conn.execute(
                    text(
                        "UPDATE batch_requests SET lease_expires_at = "
                        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT) - 1000000"
                    )
                )
            await behind.sweep()  # ten minutes behind: still sees the lease as dead
            async with db.read() as conn:
                state, losses = (
                    await conn.execute(text("SELECT state, lease_losses FROM batch_requests WHERE batch_id = :b"), {"b": batch.id})
                ).one()
            assert (state, losses) == (RequestState.PENDING, 1)
        finally:
            for each in (db, ahead_db, behind_db):
                await each.close()

    try:
        asyncio.run(scenario())
    finally:
        drop_postgres_database(url)
