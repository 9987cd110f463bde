"""Every SQL statement about workspaces and API keys."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update

from .database import Database
from .notify import CHANNEL
from .schema import api_keys, workspaces

K = api_keys
W = workspaces


@dataclass(slots=True)
class KeyRecord:
    id: str
    workspace_id: str
    workspace_name: str
    name: str | None
    prefix: str
    created_at: int
    last_used_at: int | None
    disabled_at: int | None

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        return cls(*row) if isinstance(row, tuple) else cls(**row._mapping)


_KEY_COLUMNS = [
    K.c.id,
    K.c.workspace_id,
    W.c.name.label("workspace_name"),
    K.c.name,
    K.c.prefix,
    K.c.created_at,
    K.c.last_used_at,
    K.c.disabled_at,
]


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def workspace_id(self, name: str, *, new_id: str, now: int) -> str:
        """The id of the named workspace, created when it does not exist yet."""
        async with self.db.write() as conn:
            found = (await conn.execute(select(W.c.id).where(W.c.name == name))).scalar()
            if found is not None:
                return found
            await conn.execute(insert(W).values(id=new_id, name=name, created_at=now))
            return new_id

    async def add_key(
        self, *, key_id: str, workspace_id: str, name: str | None, prefix: str, secret_hash: str, now: int
    ) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                insert(K).values(
                    id=key_id, workspace_id=workspace_id, name=name, prefix=prefix, secret_hash=secret_hash, created_at=now
                )
            )
            if self.db.is_postgres:  # every server reads its key set again when this commits
                await conn.execute(select(func.pg_notify(CHANNEL, f"keys-changed:{key_id}")))

    async def list_keys(self) -> list[KeyRecord]:
        query = select(*_KEY_COLUMNS).select_from(K.join(W, W.c.id == K.c.workspace_id)).order_by(K.c.created_at)
        async with self.db.read() as conn:
            return [KeyRecord.from_row(r) for r in await conn.execute(query)]

    async def disable(self, key_id: str, now: int) -> bool:
        """Disable a key. On PostgreSQL every server process hears of it when this commits
        (NOTIFY is transactional) and drops its cached checks; SQLite servers see it when
        their cache entry expires (seconds)."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(K).where(K.c.id == key_id, K.c.disabled_at.is_(None)).values(disabled_at=now)
            )
            if result.rowcount:
                if self.db.is_postgres:
                    await conn.execute(select(func.pg_notify(CHANNEL, f"key-disabled:{key_id}")))
                return True
            return (await conn.execute(select(K.c.id).where(K.c.id == key_id))).first() is not None

    async def all_keys(self) -> list[tuple[str, KeyRecord]]:
        """Every key (disabled ones too: once any key exists, keys are required), with its
        secret's hash."""
        query = select(K.c.secret_hash, *_KEY_COLUMNS).select_from(K.join(W, W.c.id == K.c.workspace_id))
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.secret_hash, KeyRecord.from_row(row[1:])) for row in rows]

    async def count(self) -> int:
        async with self.db.read() as conn:
            return (await conn.execute(select(func.count()).select_from(K))).scalar_one()

    async def touch(self, used: Iterable[tuple[str, int]]) -> None:
        params = [{"k": key_id, "t": when} for key_id, when in used]
        if not params:
            return
        async with self.db.write() as conn:
            await conn.execute(update(K).where(K.c.id == bindparam("k")).values(last_used_at=bindparam("t")), params)
