"""Idempotent batch creates: an ``Idempotency-Key`` header makes a retried create (same key,
same body) answer with the batch the first one made, for a day, on both batch APIs and
across API processes (the key is a row written in the create's own transaction, so two
creates racing with one key make one batch: the second waits on the key, then reads it)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import IO

from .protocol.errors import ApiError, invalid_request
from .store.batches import BatchRecord, BatchStore, IdempotencyKey, IdempotencyTaken

log = logging.getLogger("batchyard.batches")

HEADER = "idempotency-key"
DIGEST_READ = 1 << 20
IDEMPOTENCY_TTL_US = 24 * 3600 * 1_000_000  # a key names one batch for a day
MAX_IDEMPOTENCY_KEY = 255


def body_digest(body: IO[bytes]) -> str:
    """SHA-256 of a spooled body, read from the start and left at the start (CPU and disk
    work: call it on a thread)."""
    digest = hashlib.sha256()
    body.seek(0)
    while chunk := body.read(DIGEST_READ):
        digest.update(chunk)
    body.seek(0)
    return digest.hexdigest()


def idempotency_key(
    raw: str | None, workspace_id: str, api: str, body_hash: str, now: int
) -> IdempotencyKey | None:
    """The ``Idempotency-Key`` header of a create, checked: 1 to 255 printable ASCII."""
    if raw is None:
        return None
    key = raw.strip()
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not (key.isascii() and key.isprintable()):
        raise invalid_request(f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters")
    return IdempotencyKey(workspace_id, api, key, body_hash, now - IDEMPOTENCY_TTL_US)


async def created_once(
    store: BatchStore,
    key: IdempotencyKey | None,
    create: Callable[[], Awaitable[BatchRecord]],
    stored: Callable[[str], Awaitable[BatchRecord]],
    conflict: Callable[[str], ApiError],
) -> BatchRecord:
    """Create a batch at most once per idempotency key: a key already stored (by an earlier
    create, or by one that raced this and won) answers with its batch as it stands now; the
    same key with another body is ``conflict``."""
    if key is None:
        return await create()

    async def replay() -> BatchRecord | None:
        found = await store.idempotent_batch(key)
        if found is None:
            return None
        batch_id, body_hash = found
        if body_hash != key.body_hash:
            raise conflict(key.key)
        log.info("idempotent create answered with its batch", extra={"batch_id": batch_id})
        return await stored(batch_id)

    earlier = await replay()
    if earlier is not None:
        return earlier
    try:
        return await create()
    except IdempotencyTaken:
        again = await replay()
        if again is None:  # stored, then already a day old: not possible, but never a 500
            raise ApiError("api_error", "The Idempotency-Key's batch could not be read; retry.", retryable=True) from None
        return again


def key_reused(key: str) -> str:
    return (
        f"Idempotency-Key {key[:128]!r} was already used with a different request body in the last 24 hours; "
        "use a new key for a new batch."
    )
