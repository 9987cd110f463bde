"""API keys and workspaces: creating, listing, disabling, and checking a presented key.

A key is ``sk-by-`` followed by 43 base64url characters (256 random bits). Only its
SHA-256 is stored; a presented key is hashed and looked up by that hash, so no secret is
ever compared character by character. Each process holds the hashes of all active keys.
On PostgreSQL a disabled key stops working everywhere at once (a notice makes every
process read the set again); on SQLite within a few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass

from .config import RateLimits
from .protocol.ids import BASE58_ALPHABET
from .protocol.timestamps import now_us
from .store.keys import KeyRecord, KeyStore
from .store.notify import Notice

log = logging.getLogger("batchyard.keys")

KEY_PREFIX = "sk-by-"
ADMIN_KEY_PREFIX = "sk-by-admin-"
CACHE_SECONDS = 5.0  # the key set is read again at least this often
UNKNOWN_REFRESH = 1.0  # an unknown key makes the ring read the set again, at most this often
TOUCH_EVERY = 60.0  # last_used_at is written at most this often per key


def _id(prefix: str) -> str:
    number = secrets.randbits(128)
    chars = []
    for _ in range(22):
        number, rem = divmod(number, 58)
        chars.append(BASE58_ALPHABET[rem])
    return f"{prefix}01{''.join(chars)}"


def new_secret(prefix: str = KEY_PREFIX) -> str:
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str
    workspace_id: str
    workspace_name: str
    admin: bool = False  # an Admin API key: /v1/organizations/* and nothing else


class KeyRing:
    """What the API asks: are keys required, and whose is this one?

    Every key's hash is held in memory (keys are few), so checking a key costs no
    query, and a flood of made-up keys cannot become a flood of database reads. The set
    is read again when a key-change notice arrives (PostgreSQL: from any process), every
    few seconds as a backstop, and when an unknown key shows up, at most once a second
    (so a key just made by ``batchyard keys create`` in another process works within a
    second even on SQLite)."""

    def __init__(self, store: KeyStore, *, require_keys: bool = False) -> None:
        self.store = store
        self.require_keys = require_keys
        self._keys: dict[str, KeyRecord] | None = None  # secret hash -> key
        self._workspace_keys = False  # some key of a workspace exists (not only admin keys)
        # Limits set through the Admin API, by workspace id (read with the keys, and again
        # on the same notices): they win over the config file's.
        self.limits: dict[str, dict[str, int | None]] = {}
        self._loaded_at = -math.inf
        self._loading: asyncio.Future[None] | None = None
        self._generation = 0  # bumped by forget(): a load begun before it is not trusted
        self._touched: dict[str, float] = {}
        self._pending_touch: dict[str, int] = {}

    async def _load(self) -> None:
        try:
            while True:
                generation = self._generation
                keys = {digest: record for digest, record in await self.store.all_keys()}
                limits = await self.store.all_limits()
                if generation == self._generation:
                    self._keys = keys
                    self.limits = limits
                    self._workspace_keys = any(not record.admin for record in keys.values())
                    self._loaded_at = time.monotonic()
                    return
        finally:
            self._loading = None

    async def refresh(self) -> None:
        """Read the key set (once, however many callers ask at the same moment)."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loading)

    async def _current(self) -> dict[str, KeyRecord]:
        if self._keys is None or self._loaded_at == -math.inf:
            # First use, or the keys changed (forget): no answer from the old set.
            try:
                await self.refresh()
            except Exception:
                if self._keys is None:
                    raise
                log.warning("could not read the keys again; the last set read is used meanwhile")
        elif time.monotonic() - self._loaded_at >= CACHE_SECONDS and self._loading is None:
            self._loading = asyncio.ensure_future(self._load())  # the periodic re-read, in the background
        assert self._keys is not None
        return self._keys

    async def keys_required(self) -> bool:
        """Once any workspace key exists, every API call needs one (admin keys open the
        Admin API only, so they leave open mode as it is)."""
        if self.require_keys:
            return True
        await self._current()
        return self._workspace_keys

    async def check(self, secret: str) -> Caller | None:
        """The caller behind a key, or None for an unknown, inactive or archived one, or one
        of an archived workspace."""
        digest = hash_secret(secret)
        record = (await self._current()).get(digest)
        if record is None and time.monotonic() - self._loaded_at >= UNKNOWN_REFRESH:
            await self.refresh()  # a key made since the last read? (at most once a second)
            record = (self._keys or {}).get(digest)
        if record is None or not record.usable:
            return None
        now = time.monotonic()
        if now - self._touched.get(record.id, 0.0) >= TOUCH_EVERY:
            self._touched[record.id] = now
            self._pending_touch[record.id] = now_us()
        return Caller(record.id, record.workspace_id, record.workspace_name, record.admin)

    def limits_for(self, workspace_id: str, workspace_name: str, configured: RateLimits) -> tuple[int, int]:
        """(requests per minute per key, queued batch requests) of a workspace: the Admin
        API's value where one is set, else the config file's (its workspace table, else its
        defaults). 0: no limit."""
        per_minute, queued = configured.for_workspace(workspace_name)
        own = self.limits.get(workspace_id)
        if own:
            if own.get("requests_per_minute") is not None:
                per_minute = int(own["requests_per_minute"])  # type: ignore[arg-type]
            if own.get("max_queued_requests") is not None:
                queued = int(own["max_queued_requests"])  # type: ignore[arg-type]
        return per_minute, queued

    def forget(self) -> None:
        """The key set changed: the next check reads it again."""
        self._generation += 1
        self._loaded_at = -math.inf

    async def flush_usage(self) -> None:
        pending, self._pending_touch = self._pending_touch, {}
        if pending:
            await self.store.touch(pending.items())


def new_workspace_id() -> str:
    return _id("wrkspc_")


async def create_key(store: KeyStore, workspace: str | None, name: str | None, *, admin: bool = False) -> tuple[str, str, str]:
    """Make a key for a workspace (created on first use), or an admin key (``admin``: no
    workspace). Returns (key id, workspace id, the secret): the secret exists only in this
    return value."""
    now = now_us()
    workspace_id = "" if admin else await store.workspace_id(workspace or "", new_id=new_workspace_id(), now=now)
    prefix = ADMIN_KEY_PREFIX if admin else KEY_PREFIX
    secret = new_secret(prefix)
    key_id = _id("apikey_" if not admin else "adminkey_")
    await store.add_key(
        key_id=key_id,
        workspace_id=workspace_id,
        name=name,
        prefix=secret[: len(prefix) + 6],
        secret_hash=hash_secret(secret),
        now=now,
        admin=admin,
    )
    return key_id, workspace_id, secret


KEY_NOTICES = ("keys-changed", "key-disabled")


async def forget_disabled_keys(ring: KeyRing, notices: asyncio.Queue[Notice]) -> None:
    """Read the key set again whenever any process changes it."""
    while True:
        if (await notices.get()).kind in KEY_NOTICES:
            ring.forget()


async def flush_usage_forever(ring: KeyRing, every: float = 10.0) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await ring.flush_usage()
        except Exception:
            log.warning("could not record key usage; will retry")
