"""Every SQL statement about workspaces and API keys."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from .database import Database
from .notify import CHANNEL
from .schema import api_keys, workspace_limits, workspaces

K = api_keys
W = workspaces
L = workspace_limits
LIMIT_NAMES = ("requests_per_minute", "max_queued_requests")


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
    archived_at: int | None = None
    admin: bool = False
    workspace_archived_at: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        return cls(*row) if isinstance(row, tuple) else cls(**row._mapping)

    @property
    def status(self) -> str:
        """As the Admin API names it: active, inactive or archived."""
        if self.archived_at is not None:
            return "archived"
        return "inactive" if self.disabled_at is not None else "active"

    @property
    def usable(self) -> bool:
        return self.disabled_at is None and self.archived_at is None and self.workspace_archived_at is None


@dataclass(slots=True)
class WorkspaceRecord:
    id: str
    name: str
    created_at: int
    archived_at: int | None

    @classmethod
    def from_row(cls, row: Any) -> WorkspaceRecord:
        return cls(**row._mapping)


class WorkspaceNameTaken(Exception):
    pass


_KEY_COLUMNS = [
    K.c.id,
    K.c.workspace_id,
    func.coalesce(W.c.name, literal("")).label("workspace_name"),
    K.c.name,
    K.c.prefix,
    K.c.created_at,
    K.c.last_used_at,
    K.c.disabled_at,
    K.c.archived_at,
    K.c.admin,
    W.c.archived_at.label("workspace_archived_at"),
]
_KEYS = K.join(W, W.c.id == K.c.workspace_id, isouter=True)  # admin keys have no workspace
_WORKSPACE_COLUMNS = [W.c.id, W.c.name, W.c.created_at, W.c.archived_at]




class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def workspace_named(self, name: str) -> str | None:
        async with self.db.read() as conn:
            return (await conn.execute(select(W.c.id).where(W.c.name == name))).scalar()

    async def workspace_id(self, name: str, *, new_id: str, now: int) -> str:
        """The id of the named workspace, created when it does not exist yet (by another
        process at the same moment, too: then its id)."""
        try:
            async with self.db.write() as conn:
                found = (await conn.execute(select(W.c.id).where(W.c.name == name))).scalar()
                if found is not None:
                    return found
                await conn.execute(insert(W).values(id=new_id, name=name, created_at=now))
                return new_id
        except IntegrityError:
            found = await self.workspace_named(name)
            if found is None:
                raise
            return found

    async def add_key(
        self,
        *,
        key_id: str,
        workspace_id: str,
        name: str | None,
        prefix: str,
        secret_hash: str,
        now: int,
        admin: bool = False,
    ) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                insert(K).values(
                    id=key_id,
                    workspace_id=workspace_id,
                    name=name,
                    prefix=prefix,
                    secret_hash=secret_hash,
                    created_at=now,
                    admin=admin,
                )
            )
            await self._changed(conn, f"keys-changed:{key_id}")

    async def _changed(self, conn: Any, notice: str) -> None:
        if self.db.is_postgres:  # every server reads its key set again when this commits
            await conn.execute(select(func.pg_notify(CHANNEL, notice)))

    async def list_keys(self) -> list[KeyRecord]:
        query = select(*_KEY_COLUMNS).select_from(_KEYS).order_by(K.c.created_at)
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
        query = select(K.c.secret_hash, *_KEY_COLUMNS).select_from(_KEYS)
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

    # -- the Admin API ---------------------------------------------------------------------

    async def key(self, key_id: str) -> KeyRecord | None:
        """A workspace key (the Admin API lists and changes those, not admin keys)."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(*_KEY_COLUMNS).select_from(_KEYS).where(K.c.id == key_id, ~K.c.admin))).first()
        return None if row is None else KeyRecord.from_row(row)

    async def _page(
        self, query: Any, id_column: Any, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list[Any], bool]:
        """One page of rows by id, descending: ``after_id`` the page past it, ``before_id``
        the page before it. Returns the rows and whether more lie beyond them."""
        backwards = before_id is not None and after_id is None
        if after_id is not None:
            query = query.where(id_column < after_id)
        if before_id is not None:
            query = query.where(id_column > before_id)
        query = query.order_by(id_column.asc() if backwards else id_column.desc()).limit(limit + 1)
        async with self.db.read() as conn:
            rows = list((await conn.execute(query)).all())
        page = rows[:limit]
        if backwards:
            page.reverse()
        return page, len(rows) > limit

    async def page_keys(
        self, limit: int, after_id: str | None, before_id: str | None, *, workspace_id: str | None, status: str | None
    ) -> tuple[list[KeyRecord], bool]:
        query = select(*_KEY_COLUMNS).select_from(_KEYS).where(~K.c.admin)
        if workspace_id is not None:
            query = query.where(K.c.workspace_id == workspace_id)
        if status == "archived":
            query = query.where(K.c.archived_at.is_not(None))
        elif status == "inactive":
            query = query.where(K.c.archived_at.is_(None), K.c.disabled_at.is_not(None))
        elif status == "active":
            query = query.where(K.c.archived_at.is_(None), K.c.disabled_at.is_(None))
        elif status is not None:  # expired: keys here never expire
            return [], False
        rows, has_more = await self._page(query, K.c.id, limit, after_id, before_id)
        return [KeyRecord.from_row(r) for r in rows], has_more

    async def update_key(self, key_id: str, *, name: str | None, status: str | None, now: int) -> bool:
        """Rename a key and/or move it to active, inactive or archived (archived is final:
        the caller checks). False when there is no such key."""
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = name
        if status == "active":
            values["disabled_at"] = None
        elif status == "inactive":
            values["disabled_at"] = func.coalesce(K.c.disabled_at, now)
        elif status == "archived":
            values["disabled_at"] = func.coalesce(K.c.disabled_at, now)
            values["archived_at"] = func.coalesce(K.c.archived_at, now)
        async with self.db.write() as conn:
            if values:
                result = await conn.execute(update(K).where(K.c.id == key_id, ~K.c.admin).values(**values))
                if not result.rowcount:
                    return False
                await self._changed(conn, f"key-disabled:{key_id}")
                return True
            return (await conn.execute(select(K.c.id).where(K.c.id == key_id, ~K.c.admin))).first() is not None

    async def workspace(self, workspace_id: str) -> WorkspaceRecord | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(*_WORKSPACE_COLUMNS).where(W.c.id == workspace_id))).first()
        return None if row is None else WorkspaceRecord.from_row(row)

    async def page_workspaces(
        self, limit: int, after_id: str | None, before_id: str | None, *, include_archived: bool, ids: Sequence[str] | None
    ) -> tuple[list[WorkspaceRecord], bool]:
        query = select(*_WORKSPACE_COLUMNS)
        if not include_archived:
            query = query.where(W.c.archived_at.is_(None))
        if ids is not None:
            query = query.where(W.c.id.in_(list(ids)))
        rows, has_more = await self._page(query, W.c.id, limit, after_id, before_id)
        return [WorkspaceRecord.from_row(r) for r in rows], has_more

    async def create_workspace(self, workspace_id: str, name: str, now: int) -> WorkspaceRecord:
        try:
            async with self.db.write() as conn:
                await conn.execute(insert(W).values(id=workspace_id, name=name, created_at=now))
        except IntegrityError:
            raise WorkspaceNameTaken(name) from None
        return WorkspaceRecord(workspace_id, name, now, None)

    async def rename_workspace(self, workspace_id: str, name: str) -> WorkspaceRecord | None:
        try:
            async with self.db.write() as conn:
                await conn.execute(update(W).where(W.c.id == workspace_id).values(name=name))
                await self._changed(conn, f"keys-changed:{workspace_id}")  # keys carry the name
        except IntegrityError:
            raise WorkspaceNameTaken(name) from None
        return await self.workspace(workspace_id)

    async def archive_workspace(self, workspace_id: str, now: int) -> WorkspaceRecord | None:
        """Archive a workspace: its keys stop working (every process hears of it on
        PostgreSQL); its batches and files stay."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(W).where(W.c.id == workspace_id, W.c.archived_at.is_(None)).values(archived_at=now)
            )
            if result.rowcount:
                await self._changed(conn, f"key-disabled:{workspace_id}")
        return await self.workspace(workspace_id)

    async def all_limits(self) -> dict[str, dict[str, int | None]]:
        """Every workspace's Admin API limits: {workspace id: {limit name: value or None}}."""
        async with self.db.read() as conn:
            rows = (await conn.execute(select(L.c.workspace_id, *[L.c[n] for n in LIMIT_NAMES]))).all()
        return {row[0]: dict(zip(LIMIT_NAMES, row[1:], strict=True)) for row in rows}

    async def set_limits(self, workspace_id: str, values: dict[str, int | None], now: int) -> None:
        """Set (a number) or clear (None) some of a workspace's limits; every process reads
        them again when this commits (PostgreSQL: a notice)."""
        async with self.db.write() as conn:
            found = (await conn.execute(select(L.c.workspace_id).where(L.c.workspace_id == workspace_id))).first()
            if found is None:
                await conn.execute(insert(L).values(workspace_id=workspace_id, updated_at=now, **values))
            else:
                await conn.execute(update(L).where(L.c.workspace_id == workspace_id).values(updated_at=now, **values))
            await self._changed(conn, f"keys-changed:limits:{workspace_id}")
