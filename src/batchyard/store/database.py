"""Connections to SQLite (the embedded default) or PostgreSQL (for scale).

SQLite allows one writer at a time, so writes go through a single connection that
starts its transactions with ``BEGIN IMMEDIATE`` (no upgrade deadlocks), while reads
use a small pool of their own under WAL. PostgreSQL uses one pool for both.
"""

from __future__ import annotations

import fcntl
import operator
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import BigInteger, event, literal_column, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


class DatabaseUrlError(ValueError):
    pass


# Now in microseconds on the database server's clock: leases that several engines compare
# are set and read on this one clock, whatever each host's clock says.
PG_NOW = literal_column("CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)", BigInteger)

# Server states that are an outage, not a bug: shut down by an admin or a crash, not
# accepting connections yet, out of connection slots.
OUTAGE_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}


def is_database_outage(exc: BaseException) -> bool:
    """A lost or refused database connection (restart, failover), as opposed to a bug."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    if isinstance(exc, sqlite3.OperationalError):  # (from statements run on the driver itself)
        return True
    if isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError, OSError)):
        return True
    if isinstance(exc, asyncpg.PostgresError) and (
        getattr(exc, "sqlstate", None) in OUTAGE_SQLSTATES
        # 55000 is many things; at connect, this one: the database refuses new connections.
        or "is not currently accepting connections" in str(exc)
    ):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_database_outage(cause)


@dataclass(slots=True)
class DriverRows:
    """What a statement run on the SQLite driver itself gave: its rows and its row count."""

    rows: list[Any]
    rowcount: int

    def all(self) -> list[Any]:
        return self.rows

    def __iter__(self) -> Any:
        return iter(self.rows)


class DriverStatement:
    """A Core statement compiled once for a dialect and run by the driver with positional
    rows: an ``executemany`` of a thousand rows without SQLAlchemy's per-row parameter
    processing (about 8 µs a row). Values go to the driver as they are, so it serves
    statements whose parameters the drivers take natively (ints, strings, bytes, None).

    On SQLite it goes to aiosqlite directly, inside the transaction SQLAlchemy opened on the
    same connection: one trip to the connection's thread per statement (rows fetched in the
    same trip), where SQLAlchemy's adapter makes several and spends more on the way than
    SQLite does on the work. Its errors are then sqlite3's own (``is_database_outage``
    knows them)."""

    def __init__(self, statement: Any, dialect: Any) -> None:
        self._on_sqlite = dialect.name == "sqlite"
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        names = list(compiled.positiontup or [])
        # The statement's own bound values (``state == RUNNING``, say), as plain values.
        values = compiled.params
        self._fixed = {
            name: int(values[name]) if isinstance(values[name], int) else values[name]
            for bind, name in compiled.bind_names.items()
            if not bind.required
        }
        self._row = operator.itemgetter(*names) if len(names) > 1 else (lambda values: (values[names[0]],))

    async def execute(self, conn: AsyncConnection, values: dict[str, Any]) -> Any:
        """Run once; the result has ``all()``, iteration and ``rowcount``."""
        return await self._run(conn, self._row({**self._fixed, **values}), many=False)

    async def executemany(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> Any:
        """Run once per row; the result has ``rowcount`` (on SQLite, rows changed in all)."""
        fixed, row = self._fixed, self._row
        return await self._run(conn, [row({**fixed, **given}) for given in rows], many=True)

    async def _run(self, conn: AsyncConnection, parameters: Any, *, many: bool) -> Any:
        if not self._on_sqlite:
            return await conn.exec_driver_sql(self.sql, parameters)
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        before = driver.total_changes
        if many:
            await driver.executemany(self.sql, parameters)
            rows: list[Any] = []
        else:
            rows = list(await driver.execute_fetchall(self.sql, parameters))
        return DriverRows(rows, driver.total_changes - before)


class EngineRefused(RuntimeError):
    """A second engine on a SQLite database that already has one."""


class SoleEngineLock:
    """The one engine of a SQLite database file holds this lock (an advisory ``flock`` on a
    file beside the database) for as long as it runs. The operating system frees it when
    the process dies, however it dies, so a crashed engine never blocks the next one; a
    second engine while the first lives is refused before it touches any lease."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".engine-lock")
        self._fd: int | None = None

    def acquire(self) -> SoleEngineLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EngineRefused(
                f"another batchyard engine (pid {holder}) is already running on the SQLite database {self.database}: "
                "SQLite serves one engine per database file. Stop that one, start this one with --no-engine "
                "(API only), or use PostgreSQL (--database postgresql://...) to run several workers."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


@dataclass(frozen=True)
class DatabaseUrl:
    """A user-facing URL (``sqlite:///PATH`` or ``postgresql://...``) and its driver form."""

    raw: str
    dialect: str  # "sqlite" or "postgresql"
    driver_url: str

    @property
    def sqlite_path(self) -> Path | None:
        if self.dialect != "sqlite":
            return None
        database = make_url(self.driver_url).database
        return None if not database or database == ":memory:" else Path(database)

    @property
    def libpq_url(self) -> str:
        """The URL as libpq and asyncpg take it (no SQLAlchemy driver name)."""
        return make_url(self.driver_url).set(drivername="postgresql").render_as_string(hide_password=False)

    def redacted(self) -> str:
        return make_url(self.driver_url).render_as_string(hide_password=True)


def parse_database_url(raw: str) -> DatabaseUrl:
    try:
        url = make_url(raw)
    except Exception as exc:  # sqlalchemy raises ArgumentError with its own wording
        raise DatabaseUrlError(f"not a database URL: {raw!r} ({exc})") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        return DatabaseUrl(raw, "sqlite", url.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False))
    if backend in ("postgresql", "postgres"):
        return DatabaseUrl(
            raw, "postgresql", url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        )
    raise DatabaseUrlError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://...")


def sole_engine_lock(url: DatabaseUrl) -> SoleEngineLock | None:
    """The lock an engine must hold on this database, where it allows only one (a SQLite
    file); None where engines share it (PostgreSQL) or it is private to the process
    (SQLite in memory)."""
    path = url.sqlite_path
    return None if path is None else SoleEngineLock(path.resolve())


def _sqlite_engine(url: str, *, writer: bool, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=600,
        connect_args={"timeout": 30},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to choose.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


class Database:
    """Owns the engines; hands out write transactions and read connections."""

    def __init__(self, url: DatabaseUrl, *, pool_size: int = 10) -> None:
        self.url = url
        self.dialect = url.dialect
        self._statements: dict[str, DriverStatement] = {}
        if url.dialect == "sqlite":
            path = url.sqlite_path
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = _sqlite_engine(url.driver_url, writer=True, pool_size=1)
            self._reader = _sqlite_engine(url.driver_url, writer=False, pool_size=4)
        else:
            self._writer = create_async_engine(
                url.driver_url,
                pool_size=pool_size,
                max_overflow=pool_size,
                # A ping per checkout finds connections a database restart killed before a
                # request (or a results stream halfway out) trips over them.
                pool_pre_ping=True,
                pool_timeout=600,
            )
            self._reader = self._writer

    def statement(self, name: str, build: Callable[[], Any]) -> DriverStatement:
        """The statement ``build`` makes, built and compiled for this database once: for
        statements on every claim and every write of results, where building, caching and
        executing through SQLAlchemy cost more than the database's own work."""
        compiled = self._statements.get(name)
        if compiled is None:
            compiled = self._statements[name] = DriverStatement(build(), self._writer.dialect)
        return compiled

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def sole_engine_lock(self) -> SoleEngineLock | None:
        return sole_engine_lock(self.url)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A read-write transaction, committed on success and rolled back on error."""
        async with self._writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._reader.connect() as conn:
            yield conn

    @asynccontextmanager
    async def exclusive(self, key: int) -> AsyncIterator[bool]:
        """Whether this process holds a cluster-wide lock named by ``key`` for the block.

        On PostgreSQL a session advisory lock (freed if the process dies); SQLite serves
        one engine, so there it is always held."""
        if not self.is_postgres:
            yield True
            return
        async with self._writer.connect() as conn:
            held = bool((await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})).scalar())
            await conn.commit()
            try:
                yield held
            finally:
                if held:
                    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    await conn.commit()

    async def close(self) -> None:
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()
