"""A PostgreSQL wire-protocol proxy that counts the SQL statements a client sends.

Only the client-to-server direction is parsed. Transaction control (BEGIN, COMMIT,
ROLLBACK) and empty statements are not counted: what is counted is the work asked of the
database. SSL requests are refused by the proxy itself so the stream stays readable."""

from __future__ import annotations

import asyncio
import struct
import threading
from urllib.parse import urlsplit, urlunsplit

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CONTROL = {"", "BEGIN", "COMMIT", "ROLLBACK", "BEGIN; ROLLBACK", "BEGIN;ROLLBACK"}


class CountingProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._parts = parts
        self.statements: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        netloc = self._parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(self._parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))

    def start(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def count(self) -> int:
        return len(self.statements)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return

        async def downstream() -> None:
            while data := await server_r.read(65536):
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        task = asyncio.create_task(downstream())
        parsed: dict[bytes, str] = {}
        portals: dict[bytes, bytes] = {}
        try:
            while True:  # startup phase: untyped messages
                header = await client_r.readexactly(8)
                length, code = struct.unpack("!ii", header)
                if code in (SSL_REQUEST, GSSENC_REQUEST):
                    client_w.write(b"N")
                    await client_w.drain()
                    continue
                server_w.write(header + await client_r.readexactly(length - 8))
                await server_w.drain()
                break
            while True:  # typed messages
                kind = await client_r.readexactly(1)
                (length,) = struct.unpack("!i", await client_r.readexactly(4))
                body = await client_r.readexactly(length - 4)
                if kind == b"Q":
                    text = body.rstrip(b"\0").decode(errors="replace").strip().rstrip(";").strip()
                    if text.upper() not in CONTROL:
                        self.statements.append(text)
                elif kind == b"P":  # Parse: statement name, query text
                    name, _, rest = body.partition(b"\0")
                    parsed[name] = rest.partition(b"\0")[0].decode(errors="replace").strip()
                elif kind == b"B":  # Bind: portal name, statement name
                    portal, _, rest = body.partition(b"\0")
                    portals[portal] = rest.partition(b"\0")[0]
                elif kind == b"E":  # Execute: portal name
                    text = parsed.get(portals.get(body.partition(b"\0")[0], b""), "<unknown>")
                    if text.upper().rstrip(";").strip() not in CONTROL:
                        self.statements.append(text)
                server_w.write(kind + struct.pack("!i", length) + body)
                await server_w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            server_w.close()
            task.cancel()
