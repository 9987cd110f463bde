"""API keys and workspaces: creating, listing, disabling, and checking a presented key.

A key is ``sk-by-`` followed by 43 base64url characters (256 random bits). Only its
SHA-256 is stored; a presented key is hashed and looked up by that hash, so no secret is
ever compared character by character. Checks are cached for a few seconds per process.
On PostgreSQL a disabled key stops working everywhere at once (a notice clears every
process's cache); on SQLite within those few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass

from .protocol.ids import BASE58_ALPHABET
from .protocol.timestamps import now_us
from .store.keys import KeyRecord, KeyStore
from .store.notify import Notice

log = logging.getLogger("batchyard.keys")

KEY_PREFIX = "sk-by-"
CACHE_SECONDS = 5.0
TOUCH_EVERY = 60.0  # last_used_at is written at most this often per key


def _id(prefix: str) -> str:
    number = secrets.randbits(128)
    chars = []
    for _ in range(22):
        number, rem = divmod(number, 58)
        chars.append(BASE58_ALPHABET[rem])
    return f"{prefix}01{''.join(chars)}"


def new_secret() -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str
    workspace_id: str
    workspace_name: str


@dataclass(slots=True)
class _Cached:
    record: KeyRecord | None
    until: float


class KeyRing:
    """What the API asks: are keys required, and whose is this one?

    Answers come from a per-process cache refreshed in the background: a busy server
    asks the database once per key every few seconds, never once per request (and never
    with every waiting request at once when an entry goes stale)."""

    def __init__(self, store: KeyStore, *, require_keys: bool = False) -> None:
        self.store = store
        self.require_keys = require_keys
        self._cache: dict[str, _Cached] = {}
        self._loading: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._count: tuple[int, float] | None = None
        self._count_loading: asyncio.Future[int] | None = None
        self._touched: dict[str, float] = {}
        self._pending_touch: dict[str, int] = {}
        self._generation = 0  # bumped by forget(): answers read before it are not cached

    async def _load_count(self) -> int:
        try:
            count = await self.store.count()
            self._count = (count, time.monotonic() + CACHE_SECONDS)
            return count
        finally:
            self._count_loading = None

    async def keys_required(self) -> bool:
        if self.require_keys:
            return True
        if self._count_loading is None and (self._count is None or time.monotonic() >= self._count[1]):
            self._count_loading = asyncio.ensure_future(self._load_count())
        if self._count is None:  # nothing known yet: wait for the first answer
            assert self._count_loading is not None
            return await asyncio.shield(self._count_loading) > 0
        return self._count[0] > 0

    async def _load(self, digest: str) -> KeyRecord | None:
        generation = self._generation
        try:
            record = await self.store.find(digest)
            if len(self._cache) > 10_000:
                self._cache.clear()
            if generation == self._generation:
                self._cache[digest] = _Cached(record, time.monotonic() + CACHE_SECONDS)
            return record
        finally:
            self._loading.pop(digest, None)

    async def check(self, secret: str) -> Caller | None:
        """The caller behind a key, or None for an unknown or disabled one."""
        digest = hash_secret(secret)
        now = time.monotonic()
        cached = self._cache.get(digest)
        loading = self._loading.get(digest)
        if (cached is None or cached.until <= now) and loading is None:
            loading = self._loading[digest] = asyncio.ensure_future(self._load(digest))
        if cached is not None:
            record = cached.record  # possibly a few seconds stale while it refreshes
        else:
            assert loading is not None
            record = await asyncio.shield(loading)
        if record is None or record.disabled_at is not None:
            return None
        if now - self._touched.get(record.id, 0.0) >= TOUCH_EVERY:
            self._touched[record.id] = now
            self._pending_touch[record.id] = now_us()
        return Caller(record.id, record.workspace_id, record.workspace_name)

    def forget(self) -> None:
        """Drop every cached answer: the next check of each key asks the database."""
        self._generation += 1
        self._cache.clear()
        self._count = None

    async def flush_usage(self) -> None:
        pending, self._pending_touch = self._pending_touch, {}
        if pending:
            await self.store.touch(pending.items())


async def create_key(store: KeyStore, workspace: str, name: str | None) -> tuple[str, str, str]:
    """Make a key for a workspace (created on first use). Returns (key id, workspace id,
    the secret): the secret exists only in this return value."""
    now = now_us()
    workspace_id = await store.workspace_id(workspace, new_id=_id("wrkspc_"), now=now)
    secret = new_secret()
    key_id = _id("key_")
    await store.add_key(
        key_id=key_id,
        workspace_id=workspace_id,
        name=name,
        prefix=secret[: len(KEY_PREFIX) + 6],
        secret_hash=hash_secret(secret),
        now=now,
    )
    return key_id, workspace_id, secret


async def forget_disabled_keys(ring: KeyRing, notices: asyncio.Queue[Notice]) -> None:
    """Clear the ring's cache whenever any process disables a key."""
    while True:
        if (await notices.get()).kind == "key-disabled":
            ring.forget()


async def flush_usage_forever(ring: KeyRing, every: float = 10.0) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await ring.flush_usage()
        except Exception:
            log.warning("could not record key usage; will retry")
