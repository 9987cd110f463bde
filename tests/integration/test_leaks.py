"""What a process must not leak or waste: route slots of streams whose client left early,
500s for uploads cut short, database reads for made-up keys, half downloads that look
whole, resources of a start that failed."""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from batchyard.config import Settings
from batchyard.services import open_services
from batchyard.store.database import EngineRefused, parse_database_url, sole_engine_lock
from support.databases import create_postgres_database, drop_postgres_database
from support.helpers import HEADERS, make_client, raw, simple_params, wait_for_end
from support.pgproxy import CountingProxy
from support.server import ServerProcess


def metric(server_url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{server_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def send_and_leave(server_url: str, request: bytes) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)


def test_a_stream_abandoned_midway_stops_and_frees_its_slot(server: ServerProcess) -> None:
    """dripping-model sends a token every 250 ms: this reply has 52 (13 s of stream). A
    client that reads the first events and leaves must stop it there, its slot given back
    at once, not when the reply would have ended."""
    params = {**simple_params("leave midway 126", model="dripping-model"), "stream": True}
    full = make_client(server.url, timeout=30).messages.create(**{**params, "stream": False})
    assert full.usage.output_tokens >= 40  # the stream it stands for lasts 10 s or more
    body = orjson.dumps(params)
    head = (
        f"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"x-api-key: test-key\r\nanthropic-version: 2023-06-01\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(head + body)
        seen = b""
        while b"content_block_delta" not in seen:
            seen += sock.recv(65536)
        assert metric(server.url, "batchyard_route_in_flight", route="dripping-model") == 1
    left = time.monotonic()
    while metric(server.url, "batchyard_route_in_flight", route="dripping-model") != 0:
        assert time.monotonic() - left < 4, "the abandoned stream went on"
        time.sleep(0.05)


def test_a_stream_abandoned_before_its_first_event_frees_its_slot(server: ServerProcess) -> None:
    """slow-model has two slots and takes 300 ms to start: clients that leave meanwhile
    must not keep them (before, each such stream held a slot for good)."""
    body = orjson.dumps({**simple_params("leave early", model="slow-model"), "stream": True})
    head = (
        f"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"x-api-key: test-key\r\nanthropic-version: 2023-06-01\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    for _ in range(4):
        send_and_leave(server.url, head + body)
    client = make_client(server.url, timeout=20)
    with client.messages.stream(**simple_params("still served", model="slow-model")) as stream:
        assert stream.get_final_message().stop_reason in ("end_turn", "max_tokens")
    deadline = time.monotonic() + 10
    while metric(server.url, "batchyard_route_in_flight", route="slow-model") != 0:
        assert time.monotonic() < deadline, "slots of abandoned streams were not given back"
        time.sleep(0.05)


def test_an_upload_cut_short_is_the_clients_event_not_a_500(server: ServerProcess) -> None:
    before = metric(server.url, "batchyard_client_disconnects_total", handler="create_batch")
    errors_before = metric(server.url, "batchyard_http_requests_total", handler="create_batch", status="500")
    head = (
        b"POST /v1/messages/batches HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"x-api-key: test-key\r\nanthropic-version: 2023-06-01\r\ncontent-length: 5000000\r\n\r\n"
    )
    send_and_leave(server.url, head + b'{"requests": [' + b" " * 100_000)
    deadline = time.monotonic() + 10
    while metric(server.url, "batchyard_client_disconnects_total", handler="create_batch") < before + 1:
        assert time.monotonic() < deadline, "the aborted upload was not counted"
        time.sleep(0.05)
    assert metric(server.url, "batchyard_http_requests_total", handler="create_batch", status="500") == errors_before
    assert "Traceback" not in server.log()[-5000:]


def test_made_up_keys_cost_no_database_reads(tmp_path: Path) -> None:
    url = create_postgres_database()
    proxy = CountingProxy(url).start()
    api = ServerProcess(proxy.url, workdir=tmp_path, extra_args=["--no-engine"])
    try:
        made = subprocess.run(
            [sys.executable, "-m", "batchyard", "keys", "create", "--workspace", "w", "--database", url],
            capture_output=True, text=True, timeout=60, check=True,
        )
        key = made.stdout.strip()
        api.start()
        assert make_client(api.url, api_key=key).models.list().data is not None
        before = proxy.count()
        with httpx.Client(base_url=api.url, timeout=10) as http:
            for _ in range(300):
                answer = http.get("/v1/models", headers={**HEADERS, "x-api-key": f"sk-by-{secrets.token_urlsafe(32)}"})
                assert answer.status_code == 401
        sent = proxy.statements[before:]
        # One read of the key set per second at most, not one per made-up key.
        assert len(sent) <= 10, sent
    finally:
        api.stop()
        proxy.stop()
        drop_postgres_database(url)


def test_a_download_of_a_batch_deleted_under_it_is_cut_off(server: ServerProcess) -> None:
    """Pages are read one by one; deleting the batch between them must not end the
    download like a complete one (a 200 with fewer lines and a proper last chunk)."""
    client = make_client(server.url)
    count = 12_000
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"d{i}", "params": simple_params(f"download {i} " * 20)} for i in range(count)]
    )
    wait_for_end(client, batch.id, timeout=120)
    received = b""
    with raw(server.url) as http, pytest.raises(httpx.RemoteProtocolError):
        with http.stream("GET", f"/v1/messages/batches/{batch.id}/results") as response:
            assert response.status_code == 200
            chunks = response.iter_raw()
            received += next(chunks)
            assert client.messages.batches.delete(batch.id).id == batch.id
            for chunk in chunks:
                received += chunk
    assert received.count(b"\n") < count


def test_a_failed_start_closes_what_it_opened(tmp_path: Path) -> None:
    """A second engine on a SQLite file is refused in open_services: the database it
    opened is closed again and the lock it never got is not released for the holder."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")
    holder = sole_engine_lock(parse_database_url(settings.database_url))
    assert holder is not None
    holder.acquire()
    try:
        with pytest.raises(EngineRefused):
            asyncio.run(open_services(settings, run_engine=True))
        assert holder.held
        again = sole_engine_lock(parse_database_url(settings.database_url))
        assert again is not None
        with pytest.raises(EngineRefused):
            again.acquire()  # still the holder's
    finally:
        holder.release()

    async def api_only() -> None:  # and once free, a start succeeds and closes cleanly
        svc = await open_services(settings, run_engine=True)
        await svc.close()

    asyncio.run(api_only())
    free = sole_engine_lock(parse_database_url(settings.database_url))
    assert free is not None
    free.acquire().release()
