"""Timestamps: stored as integer microseconds since the Unix epoch, sent as RFC 3339.

The wire form copies the real service: microseconds and a ``+00:00`` offset, e.g.
``2025-01-29T14:25:40.141141+00:00``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

MICROS_PER_SECOND = 1_000_000


def now_us() -> int:
    return time.time_ns() // 1_000


def to_rfc3339(micros: int | None) -> str | None:
    if micros is None:
        return None
    seconds, rem = divmod(micros, MICROS_PER_SECOND)
    dt = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rem)
    return dt.isoformat(timespec="microseconds")


def seconds_to_us(seconds: float) -> int:
    return int(round(seconds * MICROS_PER_SECOND))
