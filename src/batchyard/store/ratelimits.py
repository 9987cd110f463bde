"""Every SQL statement about the shared request-rate buckets: PostgreSQL's (every API
process of a deployment), and SQLite's (the processes of one ``serve --workers N``)."""

from __future__ import annotations

from sqlalchemy import text

from ..protocol.timestamps import now_us
from .database import Database

# Refill the key's bucket to the database's clock, then take up to :want whole tokens, in
# one statement under the row's lock. In ON CONFLICT's SET every expression sees the old
# row, so `granted` and `tokens` are computed from the same refilled amount.
_REFILLED = """CASE WHEN b.capacity <> EXCLUDED.capacity THEN EXCLUDED.capacity::float8
    ELSE LEAST(EXCLUDED.capacity::float8,
               b.tokens + GREATEST(EXCLUDED.stamp - b.stamp, 0) * EXCLUDED.capacity / 60000000.0) END"""

_GRAB = text(
    f"""
INSERT INTO rate_buckets AS b (key_id, capacity, tokens, stamp, granted)
VALUES (
    CAST(:key_id AS varchar),
    CAST(:capacity AS integer),
    CAST(:capacity AS integer) - LEAST(CAST(:want AS integer), CAST(:capacity AS integer)),
    (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
    LEAST(CAST(:want AS integer), CAST(:capacity AS integer))
)
ON CONFLICT (key_id) DO UPDATE SET
    capacity = EXCLUDED.capacity,
    stamp = GREATEST(EXCLUDED.stamp, b.stamp),
    granted = LEAST(floor({_REFILLED}), CAST(:want AS integer))::integer,
    tokens = {_REFILLED} - LEAST(floor({_REFILLED}), CAST(:want AS integer))
RETURNING granted, tokens
"""
)


# The same on SQLite, for the processes of one `serve --workers N` on one host: the
# host's clock (passed in), min/max for LEAST/GREATEST, a cast for floor (never negative).
_REFILLED_LITE = """CASE WHEN rate_buckets.capacity <> excluded.capacity THEN CAST(excluded.capacity AS REAL)
    ELSE min(CAST(excluded.capacity AS REAL),
             rate_buckets.tokens + max(excluded.stamp - rate_buckets.stamp, 0) * excluded.capacity / 60000000.0) END"""

_GRAB_LITE = text(
    f"""
INSERT INTO rate_buckets (key_id, capacity, tokens, stamp, granted)
VALUES (:key_id, :capacity, :capacity - min(:want, :capacity), :now, min(:want, :capacity))
ON CONFLICT (key_id) DO UPDATE SET
    capacity = excluded.capacity,
    stamp = max(excluded.stamp, rate_buckets.stamp),
    granted = min(CAST({_REFILLED_LITE} AS INTEGER), :want),
    tokens = {_REFILLED_LITE} - min(CAST({_REFILLED_LITE} AS INTEGER), :want)
RETURNING granted, tokens
"""
)


class RateStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def grab(self, key_id: str, capacity: int, want: int) -> tuple[int, float]:
        """Take up to ``want`` requests from the key's shared bucket of ``capacity`` per
        minute. Returns (how many were granted, what is left in the bucket)."""
        params = {"key_id": key_id, "capacity": capacity, "want": want}
        async with self.db.write() as conn:
            if self.db.is_postgres:
                row = (await conn.execute(_GRAB, params)).one()
            else:
                row = (await conn.execute(_GRAB_LITE, {**params, "now": now_us()})).one()
        return int(row.granted), float(row.tokens)
