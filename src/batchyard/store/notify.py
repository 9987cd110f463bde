"""Wake-ups between processes: "a batch was created", "a batch was canceled", "a key was
disabled".

In one process (SQLite, or ``serve`` with its own engine) they travel in memory. With
PostgreSQL they also go through ``LISTEN/NOTIFY`` so that workers in other processes
hear them. They are hints for speed, never the source of truth: the engine also polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass

import asyncpg

log = logging.getLogger("batchyard.notify")
CHANNEL = "batchyard"


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str  # "created" | "canceled" | "requeued" | "key-disabled" | "ended" (webhook events to send)
    subject: str  # a batch id, "*", or a key id


class Notifier:
    """In-process fan-out of notices to every subscriber queue."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Notice]] = set()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def subscribe(self) -> asyncio.Queue[Notice]:
        queue: asyncio.Queue[Notice] = asyncio.Queue(maxsize=10_000)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Notice]) -> None:
        self._queues.discard(queue)

    def deliver(self, notice: Notice) -> None:
        for queue in self._queues:
            try:
                queue.put_nowait(notice)
            except asyncio.QueueFull:
                pass  # a hint lost is a poll later

    async def publish(self, notice: Notice) -> None:
        self.deliver(notice)


class PostgresNotifier(Notifier):
    """Notices also travel through ``LISTEN/NOTIFY``, so every process hears them.

    One connection of its own listens; when it drops (a database restart) it is opened
    again with backoff, and until then the engine's polling covers the gap."""

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self._dsn = dsn
        self._listener: asyncpg.Connection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._publish_lock = asyncio.Lock()

    async def start(self) -> None:
        self._supervisor = asyncio.create_task(self._listen_forever(), name="notify-listener")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._connected.wait(), 5)

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        if self._listener is not None and not self._listener.is_closed():
            with contextlib.suppress(Exception):
                await self._listener.close()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        kind, _, subject = payload.partition(":")
        if kind and subject:
            self.deliver(Notice(kind, subject))

    async def _listen_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _conn, event=closed: event.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self._listener = conn
                self._connected.set()
                delay = 0.1
                log.debug("listening for notices")
                while not closed.is_set() and not conn.is_closed():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(closed.wait(), 5)
                log.warning("notice listener lost its connection; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("notice listener cannot connect; retrying", extra={"error": type(exc).__name__})
            self._connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def publish(self, notice: Notice) -> None:
        self.deliver(notice)  # this process at once
        payload = f"{notice.kind}:{notice.subject}"
        try:
            async with self._publish_lock:
                conn = self._listener
                if conn is not None and not conn.is_closed():
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                    return
                temporary = await asyncpg.connect(self._dsn, timeout=5)
                try:
                    await temporary.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                finally:
                    await temporary.close()
        except Exception as exc:  # a lost hint: other processes find the work by polling
            log.warning("could not publish a notice", extra={"error": type(exc).__name__})


class RelayNotifier(Notifier):
    """Notices shared by the processes of one ``serve --workers N`` on SQLite (which has no
    LISTEN/NOTIFY): each worker holds one end of a datagram socket pair whose other end is
    in the supervisor, which passes every notice on to the other workers."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._sock = socket.socket(fileno=fd)
        self._sock.setblocking(False)

    async def start(self) -> None:
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._readable)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()

    def _readable(self) -> None:
        while True:
            try:
                payload = self._sock.recv(65536).decode()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            kind, _, subject = payload.partition(":")
            if kind and subject:
                self.deliver(Notice(kind, subject))

    async def publish(self, notice: Notice) -> None:
        self.deliver(notice)
        with contextlib.suppress(OSError):  # a full or closed relay: a hint lost is a poll later
            self._sock.send(f"{notice.kind}:{notice.subject}".encode())
