"""Every SQL statement about usage: adding to the buckets (inside a caller's transaction, or
in one of its own) and reading them back grouped for the usage and cost reports. Each use
goes into its minute, its hour and its UTC day, so a report over a month of hours reads
hour rows, not minute rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ..protocol.usage import Tokens
from .database import Database
from .schema import usage_buckets

U = usage_buckets
MINUTE_US = 60_000_000
WIDTHS = (MINUTE_US, 60 * MINUTE_US, 1440 * MINUTE_US)  # the bucket widths stored
KEY_COLUMNS = ("width", "start", "workspace_id", "key_id", "model", "service_tier")
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
    sums: dict[UsageKey, list[int]] = {}  # (in plain ints: this runs for every result)
    for key, tokens in entries:
        entry = sums.get(key)
        if entry is None:
            entry = sums[key] = [0, 0, 0, 0, 0]
        entry[0] += 1
        entry[1] += tokens.uncached_input
        entry[2] += tokens.cache_creation
        entry[3] += tokens.cache_read
        entry[4] += tokens.output
    return {key: (entry[0], Tokens(*entry[1:])) for key, entry in sums.items()}


class UsageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _upsert(self) -> Any:
        insert = (postgresql.insert if self.db.is_postgres else sqlite.insert)(U)
        insert = insert.values({name: bindparam(name) for name in (*KEY_COLUMNS, *COUNTERS)})
        return insert.on_conflict_do_update(
            index_elements=[U.c[name] for name in KEY_COLUMNS],
            set_={name: U.c[name] + insert.excluded[name] for name in COUNTERS},
        )

    async def add_in(self, conn: AsyncConnection, merged: dict[UsageKey, tuple[int, Tokens]]) -> None:
        """Add to the buckets inside the caller's transaction. Rows go in key order, so two
        writers adding to the same buckets lock them in the same order (no deadlock)."""
        if not merged:
            return
        totals: dict[tuple[Any, ...], list[int]] = {}
        for key, (count, tokens) in merged.items():
            for width in WIDTHS:
                bucket = (width, key.minute - key.minute % width, key.workspace_id, key.key_id, key.model, key.service_tier)
                entry = totals.setdefault(bucket, [0, 0, 0, 0, 0])
                entry[0] += count
                entry[1] += tokens.uncached_input
                entry[2] += tokens.cache_creation
                entry[3] += tokens.cache_read
                entry[4] += tokens.output
        rows = [
            {**dict(zip(KEY_COLUMNS, bucket, strict=True)), **dict(zip(COUNTERS, counts, strict=True))}
            for bucket, counts in sorted(totals.items())
        ]
        await self.db.statement("usage_upsert", self._upsert).executemany(conn, rows)

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
        microseconds wide aligned on ``start``, in bucket order: read from the widest stored
        buckets that fit in ``width`` and its alignment."""
        stored = max(w for w in WIDTHS if width % w == 0 and start % w == 0)
        if stored == width:
            bucket = U.c.start.label("bucket")
        else:
            bucket = (U.c.start - (U.c.start - literal(start)) % literal(width)).label("bucket")
        groups = [U.c[name] for name in group_by]
        sums = [func.sum(U.c[name]).label(name) for name in COUNTERS]
        query = select(bucket, *groups, *sums).where(U.c.width == stored, U.c.start >= start, U.c.start < end)
        for name, values in filters.items():
            if values:
                query = query.where(U.c[name].in_(list(values)))
        query = query.group_by(bucket, *groups).order_by(bucket, *groups)
        async with self.db.read() as conn:
            return [tuple(row) for row in await conn.execute(query)]
