"""Every SQL statement about usage: adding to the minute buckets (inside a caller's
transaction, or in one of its own) and reading them back grouped for the usage report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ..protocol.usage import Tokens
from .database import Database
from .schema import usage_minutes

U = usage_minutes
MINUTE_US = 60_000_000
KEY_COLUMNS = ("minute", "workspace_id", "key_id", "model", "service_tier")
COUNTERS = ("requests", "uncached_input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
GROUPS = ("workspace_id", "key_id", "model", "service_tier")


@dataclass(frozen=True, slots=True)
class UsageKey:
    """Whose usage, of what, in which minute."""

    minute: int
    workspace_id: str
    key_id: str
    model: str
    service_tier: str


def minute_of(now_us: int) -> int:
    return now_us - now_us % MINUTE_US


def merge(entries: Iterable[tuple[UsageKey, Tokens]]) -> dict[UsageKey, tuple[int, Tokens]]:
    """Entries summed per key: (requests, tokens)."""
    merged: dict[UsageKey, tuple[int, Tokens]] = {}
    for key, tokens in entries:
        count, total = merged.get(key, (0, Tokens()))
        merged[key] = (count + 1, total + tokens)
    return merged


class UsageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _upsert(self) -> Any:
        insert = (postgresql.insert if self.db.is_postgres else sqlite.insert)(U)
        return insert.on_conflict_do_update(
            index_elements=[U.c[name] for name in KEY_COLUMNS],
            set_={name: U.c[name] + insert.excluded[name] for name in COUNTERS},
        )

    async def add_in(self, conn: AsyncConnection, merged: dict[UsageKey, tuple[int, Tokens]]) -> None:
        """Add to the buckets inside the caller's transaction. Rows go in key order, so two
        writers adding to the same buckets lock them in the same order (no deadlock)."""
        if not merged:
            return
        rows = [
            {
                "minute": key.minute,
                "workspace_id": key.workspace_id,
                "key_id": key.key_id,
                "model": key.model,
                "service_tier": key.service_tier,
                "requests": count,
                "uncached_input_tokens": tokens.uncached_input,
                "cache_creation_input_tokens": tokens.cache_creation,
                "cache_read_input_tokens": tokens.cache_read,
                "output_tokens": tokens.output,
            }
            for key, (count, tokens) in sorted(merged.items(), key=lambda item: tuple(getattr(item[0], k) for k in KEY_COLUMNS))
        ]
        await conn.execute(self._upsert(), rows)

    async def add(self, merged: dict[UsageKey, tuple[int, Tokens]]) -> None:
        if merged:
            async with self.db.write() as conn:
                await self.add_in(conn, merged)

    async def buckets(
        self,
        start: int,
        end: int,
        width: int,
        group_by: Sequence[str],
        filters: Mapping[str, Sequence[str]],
    ) -> list[tuple[Any, ...]]:
        """(bucket start, *groups, *counters) rows for [start, end), buckets ``width``
        microseconds wide aligned on ``start``, in bucket order."""
        bucket = (U.c.minute - (U.c.minute - literal(start)) % literal(width)).label("bucket")
        groups = [U.c[name] for name in group_by]
        sums = [func.sum(U.c[name]).label(name) for name in COUNTERS]
        query = select(bucket, *groups, *sums).where(U.c.minute >= start, U.c.minute < end)
        for name, values in filters.items():
            if values:
                query = query.where(U.c[name].in_(list(values)))
        query = query.group_by(bucket, *groups).order_by(bucket, *groups)
        async with self.db.read() as conn:
            return [tuple(row) for row in await conn.execute(query)]
