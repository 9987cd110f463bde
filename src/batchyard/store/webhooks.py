"""Every SQL statement about webhooks: endpoints, the event outbox, deliveries (leased,
tried, retried) and their attempts.

An event is written by ``add_in`` inside the transaction that makes its transition (a
batch's end), with one delivery row per endpoint subscribed to it at that moment; an event
no endpoint hears of is not written at all. A delivery is claimed with a conditional UPDATE
(due, not leased, attempts as read), so two engines never try the same attempt; a claim
that dies with its engine is claimed again once its lease runs out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, delete, func, insert, literal, or_, select, true, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from .database import PG_NOW, Database
from .schema import DeliveryState, webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_events

E = webhook_endpoints
V = webhook_events
D = webhook_deliveries
A = webhook_attempts
SYNC_TRIES = 3


@dataclass(slots=True)
class EndpointRecord:
    id: str
    url: str
    name: str
    description: str
    events: str
    workspace_id: str | None
    secret: str
    state: str
    disabled_reason: str
    source: str
    created_at: int
    updated_at: int

    @classmethod
    def from_row(cls, row: Any) -> EndpointRecord:
        return cls(*row)

    @classmethod
    def enabled(
        cls, endpoint_id: str, url: str, name: str, description: str, events: str, workspace_id: str | None,
        secret: str, source: str, now: int,
    ) -> EndpointRecord:
        """A new endpoint, enabled, as made through the API or declared in the config."""
        return cls(endpoint_id, url, name, description, events, workspace_id, secret, "enabled", "", source, now, now)


_ENDPOINT_COLUMNS = [
    E.c.id, E.c.url, E.c.name, E.c.description, E.c.events, E.c.workspace_id, E.c.secret, E.c.state,
    E.c.disabled_reason, E.c.source, E.c.created_at, E.c.updated_at,
]  # fmt: skip


@dataclass(slots=True)
class OutboxEvent:
    id: str
    type: str
    workspace_id: str
    subject: str
    payload: bytes
    created_at: int


@dataclass(slots=True)
class DueDelivery:
    event_id: str
    endpoint_id: str
    attempt: int  # this attempt's number, from 1
    url: str
    secret: str
    payload: bytes
    event_created_at: int


@dataclass(slots=True)
class AttemptRecord:
    event_id: str
    event_type: str
    subject: str
    endpoint_id: str
    url: str
    attempt: int
    at: int
    duration_us: int
    status_code: int | None
    error: str | None
    delivery_state: int


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the outbox ----------------------------------------------------------------------

    async def add_in(self, conn: AsyncConnection, events: Sequence[OutboxEvent]) -> int:
        """Write these events and their deliveries, in the caller's transaction: one delivery
        per enabled endpoint subscribed to the event's type (and its workspace, if it names
        one). Returns the deliveries written."""
        written = 0
        for event in events:
            subscribed = select(
                literal(event.id), E.c.id, literal(int(DeliveryState.PENDING)), literal(0),
                literal(event.created_at), literal(event.created_at),
            ).where(
                E.c.state == "enabled",
                E.c.events.like(f"%,{event.type},%"),
                or_(E.c.workspace_id.is_(None), E.c.workspace_id == event.workspace_id),
            )  # fmt: skip
            rows = (
                await conn.execute(
                    insert(D)
                    .from_select(["event_id", "endpoint_id", "state", "attempts", "next_attempt_at", "created_at"], subscribed)
                    .returning(D.c.endpoint_id)
                )
            ).all()
            if rows:
                await conn.execute(
                    insert(V).values(
                        id=event.id, type=event.type, workspace_id=event.workspace_id, subject=event.subject,
                        payload=event.payload, created_at=event.created_at,
                    )
                )  # fmt: skip
                written += len(rows)
        return written

    async def add(self, events: Sequence[OutboxEvent]) -> int:
        async with self.db.write() as conn:
            return await self.add_in(conn, events)

    # -- deliveries ----------------------------------------------------------------------

    def _lease_now(self, now: int) -> Any:
        """The clock leases are set and compared on: the database's on PostgreSQL (engines
        whose clocks disagree still agree on whose lease has run out), the host's on SQLite
        (one engine)."""
        return PG_NOW if self.db.is_postgres else literal(now, BigInteger)

    def _due(self, now: int) -> tuple[Any, ...]:
        return (
            D.c.state == int(DeliveryState.PENDING),
            D.c.next_attempt_at <= now,
            or_(D.c.lease_until.is_(None), D.c.lease_until <= self._lease_now(now)),
        )

    async def endpoints_with_due(self, now: int) -> list[str]:
        """Enabled endpoints that have a delivery due now and in no one's hands (a disabled
        endpoint's deliveries wait for it)."""
        query = (
            select(D.c.endpoint_id)
            .select_from(D.join(E, E.c.id == D.c.endpoint_id))
            .where(E.c.state == "enabled", *self._due(now))
            .group_by(D.c.endpoint_id)
        )
        async with self.db.read() as conn:
            return [r[0] for r in await conn.execute(query)]

    async def due(self, endpoint_id: str, now: int, limit: int) -> list[tuple[str, str, int]]:
        """One endpoint's deliveries due now, oldest due first: (event, endpoint, attempts
        so far). Asked per endpoint, so that one endpoint's backlog never hides another's."""
        query = (
            select(D.c.event_id, D.c.endpoint_id, D.c.attempts)
            .where(D.c.endpoint_id == endpoint_id, *self._due(now))
            .order_by(D.c.next_attempt_at, D.c.event_id)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [(r[0], r[1], r[2]) for r in await conn.execute(query)]

    async def claim(self, picked: Sequence[tuple[str, str, int]], now: int, lease_us: int) -> list[DueDelivery]:
        """Take these deliveries for one attempt each, for ``lease_us``: those still due,
        unleased and at the attempt count read (another engine may have taken some). One
        short transaction each: a claim never holds one row while it waits for another."""
        taken: list[DueDelivery] = []
        for event_id, endpoint_id, attempts in picked:
            async with self.db.write() as conn:
                row = (
                    await conn.execute(
                        update(D)
                        .where(
                            D.c.event_id == event_id,
                            D.c.endpoint_id == endpoint_id,
                            D.c.attempts == attempts,
                            *self._due(now),
                        )
                        .values(attempts=D.c.attempts + 1, lease_until=self._lease_now(now) + lease_us)
                        .returning(D.c.attempts)
                    )
                ).first()
                if row is None:
                    continue
                found = (
                    await conn.execute(
                        select(E.c.url, E.c.secret, V.c.payload, V.c.created_at)
                        .select_from(E.join(V, true()))
                        .where(E.c.id == endpoint_id, V.c.id == event_id)
                    )
                ).first()
                if found is None:  # its endpoint was deleted meanwhile: nothing to send it to
                    await conn.execute(delete(D).where(D.c.event_id == event_id, D.c.endpoint_id == endpoint_id))
                    continue
            taken.append(DueDelivery(event_id, endpoint_id, row[0], found[0], found[1], found[2], found[3]))
        return taken

    async def record_attempt(
        self,
        delivery: DueDelivery,
        *,
        at: int,
        duration_us: int,
        status_code: int | None,
        error: str | None,
        outcome: DeliveryState,
        next_attempt_at: int | None,
    ) -> bool:
        """Write one attempt and what follows it: delivered, given up, or due again at
        ``next_attempt_at``. Fenced by the attempt number: an engine whose lease ran out and
        whose delivery was taken again writes nothing. Returns whether it was written."""
        values: dict[str, Any] = {"lease_until": None, "last_status": status_code, "last_error": error, "state": int(outcome)}
        if outcome == DeliveryState.PENDING:
            assert next_attempt_at is not None
            values["next_attempt_at"] = next_attempt_at
        else:
            values["finished_at"] = at
        async with self.db.write() as conn:
            result = await conn.execute(
                update(D)
                .where(
                    D.c.event_id == delivery.event_id,
                    D.c.endpoint_id == delivery.endpoint_id,
                    D.c.attempts == delivery.attempt,
                    D.c.state == int(DeliveryState.PENDING),
                )
                .values(**values)
            )
            if result.rowcount != 1:
                return False
            await conn.execute(
                insert(A).values(
                    event_id=delivery.event_id, endpoint_id=delivery.endpoint_id, attempt=delivery.attempt, at=at,
                    duration_us=duration_us, status_code=status_code, error=error,
                )
            )  # fmt: skip
        return True

    async def release_leases(self) -> None:
        """Hand back every attempt in anyone's hands: only for an engine that knows it is the
        only one (a SQLite file's), at its start, when every lease is a dead run's."""
        async with self.db.write() as conn:
            await conn.execute(
                update(D)
                .where(D.c.state == int(DeliveryState.PENDING), D.c.lease_until.is_not(None))
                .values(lease_until=None)
            )

    async def next_due(self) -> int | None:
        """When the next pending delivery comes due (microseconds), or None."""
        async with self.db.read() as conn:
            return (
                await conn.execute(select(func.min(D.c.next_attempt_at)).where(D.c.state == int(DeliveryState.PENDING)))
            ).scalar_one_or_none()

    async def recent_attempts(self, limit: int) -> list[AttemptRecord]:
        query = (
            select(
                A.c.event_id, V.c.type, V.c.subject, A.c.endpoint_id, E.c.url, A.c.attempt, A.c.at, A.c.duration_us,
                A.c.status_code, A.c.error, D.c.state,
            )
            .select_from(
                A.join(V, V.c.id == A.c.event_id)
                .outerjoin(E, E.c.id == A.c.endpoint_id)
                .outerjoin(D, (D.c.event_id == A.c.event_id) & (D.c.endpoint_id == A.c.endpoint_id))
            )
            .order_by(A.c.at.desc())
            .limit(limit)
        )  # fmt: skip
        async with self.db.read() as conn:
            return [
                AttemptRecord(r[0], r[1], r[2], r[3], r[4] or "", r[5], r[6], r[7], r[8], r[9], -1 if r[10] is None else r[10])
                for r in await conn.execute(query)
            ]

    async def delivery_counts(self) -> dict[int, int]:
        async with self.db.read() as conn:
            return {int(s): int(n) for s, n in await conn.execute(select(D.c.state, func.count()).group_by(D.c.state))}

    async def delivery_counts_by_endpoint(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        query = select(D.c.endpoint_id, D.c.state, func.count()).group_by(D.c.endpoint_id, D.c.state)
        async with self.db.read() as conn:
            for endpoint_id, state, n in await conn.execute(query):
                entry = counts.setdefault(endpoint_id, {s.name.lower(): 0 for s in DeliveryState})
                entry[DeliveryState(state).name.lower()] = int(n)
        return counts

    async def forget_before(self, cutoff: int) -> None:
        """Drop finished deliveries, their attempts and events older than ``cutoff``."""
        async with self.db.write() as conn:
            old = select(D.c.event_id, D.c.endpoint_id).where(
                D.c.state != int(DeliveryState.PENDING), D.c.finished_at < cutoff
            )
            await conn.execute(delete(A).where(tuple_(A.c.event_id, A.c.endpoint_id).in_(old)))
            await conn.execute(delete(D).where(D.c.state != int(DeliveryState.PENDING), D.c.finished_at < cutoff))
            # Pending deliveries of an endpoint deleted while its event was being written.
            await conn.execute(delete(D).where(~select(E.c.id).where(E.c.id == D.c.endpoint_id).exists()))
            await conn.execute(
                delete(V).where(V.c.created_at < cutoff, ~select(D.c.event_id).where(D.c.event_id == V.c.id).exists())
            )

    # -- endpoints -----------------------------------------------------------------------

    async def endpoints(self) -> list[EndpointRecord]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(*_ENDPOINT_COLUMNS).order_by(E.c.created_at.desc(), E.c.id.desc()))).all()
        return [EndpointRecord.from_row(r) for r in rows]

    async def endpoint(self, endpoint_id: str) -> EndpointRecord | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(*_ENDPOINT_COLUMNS).where(E.c.id == endpoint_id))).first()
        return None if row is None else EndpointRecord.from_row(row)

    async def count_endpoints(self, source: str) -> int:
        async with self.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(E).where(E.c.source == source))).scalar_one())

    async def create_endpoint(self, record: EndpointRecord) -> None:
        async with self.db.write() as conn:
            await conn.execute(insert(E).values(**{c.name: getattr(record, c.name) for c in E.c}))

    async def update_endpoint(self, endpoint_id: str, values: dict[str, Any]) -> EndpointRecord | None:
        async with self.db.write() as conn:
            await conn.execute(update(E).where(E.c.id == endpoint_id, E.c.source == "api").values(**values))
        return await self.endpoint(endpoint_id)

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        """Delete an endpoint made through the API, and its pending deliveries."""
        async with self.db.write() as conn:
            result = await conn.execute(delete(E).where(E.c.id == endpoint_id, E.c.source == "api"))
            if result.rowcount != 1:
                return False
            await conn.execute(
                delete(D).where(D.c.endpoint_id == endpoint_id, D.c.state == int(DeliveryState.PENDING))
            )
        return True

    async def sync_config(self, declared: Sequence[EndpointRecord]) -> None:
        """Make the config file's endpoints the ``config`` rows: new ones added, changed ones
        updated (their id comes from what they are, so a restart keeps it), dropped ones
        disabled (their pending deliveries stay, in case the config comes back). Processes
        starting together may race to write the same rows: the loser reads them again."""
        for attempt in range(SYNC_TRIES):
            try:
                return await self._sync_config(declared)
            except IntegrityError:
                if attempt == SYNC_TRIES - 1:
                    raise

    async def _sync_config(self, declared: Sequence[EndpointRecord]) -> None:
        async with self.db.write() as conn:
            existing = {
                row[0]: row for row in await conn.execute(select(E.c.id, E.c.state).where(E.c.source == "config"))
            }
            for record in declared:
                values = {c.name: getattr(record, c.name) for c in E.c}
                if record.id in existing:
                    values.pop("created_at")
                    await conn.execute(update(E).where(E.c.id == record.id).values(**values))
                else:
                    await conn.execute(insert(E).values(**values))
            gone = set(existing) - {r.id for r in declared}
            if gone:
                await conn.execute(
                    update(E)
                    .where(E.c.id.in_(sorted(gone)), E.c.state == "enabled")
                    .values(state="disabled", disabled_reason="no longer in the config file")
                )
