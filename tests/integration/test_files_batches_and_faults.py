"""Files in batch lines (resolved when each line runs) and uploads cut by kill -9, on both
databases."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.databases import BACKENDS, dispose, new_database, query
from support.files import tiny_pdf
from support.helpers import make_client, wait_for_end
from support.recording_upstream import RecordingUpstream
from support.server import ServerProcess

PDF_TEXT = "Shipping manifest: forty crates of tea"
NOTES = b"Ship to the north dock before noon.\n"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = new_database(request.param, tmp_path)
    yield url
    dispose(url)


def test_a_20_line_batch_resolves_its_files_when_each_line_runs(tmp_path: Path, database_url: str) -> None:
    upstream = RecordingUpstream().start()
    config = f'[[models]]\nid = "rec-anthropic"\nbackend = "anthropic"\nbase_url = "{upstream.url}"\n'
    # The API without an engine: the batch waits until the worker starts, after the delete.
    api = ServerProcess(database_url, config_text=config, workdir=tmp_path, extra_args=["--no-engine"])
    worker = ServerProcess(database_url, config_text=config, workdir=tmp_path, command="worker")
    try:
        api.start()
        client = make_client(api.url)
        notes = client.beta.files.upload(file=("notes.txt", NOTES, "text/plain"))
        pdf = client.beta.files.upload(file=("manifest.pdf", tiny_pdf(PDF_TEXT), "application/pdf"))
        doomed = client.beta.files.upload(file=("doomed.txt", b"soon gone", "text/plain"))

        def line(i: int) -> dict[str, object]:
            files = [notes.id, pdf.id] + ([doomed.id] if i >= 18 else [])
            content = [{"type": "document", "source": {"type": "file", "file_id": f}} for f in files]
            content.append({"type": "text", "text": f"Line {i}: what do these say?"})
            return {
                "custom_id": f"l{i}",
                "params": {"model": "rec-anthropic", "max_tokens": 32, "messages": [{"role": "user", "content": content}]},
            }

        batch = client.messages.batches.create(requests=[line(i) for i in range(20)])
        client.beta.files.delete(doomed.id)
        worker.start()
        ended = wait_for_end(client, batch.id, timeout=120)
        assert (ended.request_counts.succeeded, ended.request_counts.errored) == (18, 2)
        results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
        for i in (18, 19):
            error = results[f"l{i}"].error.error
            assert error.type == "not_found_error" and error.message == f"File not found: {doomed.id}"
        sent = upstream.recorded("/v1/messages")
        assert len(sent) == 18
        for body in sent:
            blocks = body["messages"][0]["content"]
            assert blocks[0]["source"] == {"type": "text", "media_type": "text/plain", "data": NOTES.decode()}
            assert blocks[1]["source"]["type"] == "base64" and blocks[1]["source"]["media_type"] == "application/pdf"
    finally:
        worker.stop()
        api.stop()
        upstream.stop()


KILL_CONFIG = """
[limits]
body_timeout = 5

[files]
sweep_interval = 0.2
abandoned_upload_after = 2

[[models]]
id = "*"
backend = "simulator"
"""


def test_kill_9_during_an_upload_leaves_nothing_half_stored(tmp_path: Path, database_url: str) -> None:
    server = ServerProcess(database_url, config_text=KILL_CONFIG, workdir=tmp_path)
    server.start()
    try:
        sock = _start_upload(server.port, megabytes=3)
        try:
            deadline = time.monotonic() + 30
            while query(database_url, "SELECT count(*) FROM file_chunks")[0][0] < 2:
                assert time.monotonic() < deadline, "the upload's chunks never reached the store"
                time.sleep(0.05)
            server.kill()
        finally:
            sock.close()
        assert query(database_url, "SELECT state FROM files") == [(0,)]  # left uploading: invisible
        server.start()
        client = make_client(server.url)
        assert list(client.files.list()) == []
        deadline = time.monotonic() + 60
        while query(database_url, "SELECT count(*) FROM files")[0][0] or query(database_url, "SELECT count(*) FROM file_chunks")[0][0]:
            assert time.monotonic() < deadline, "the abandoned upload was never swept"
            time.sleep(0.1)
        assert client.files.upload(file=("after.txt", b"fine", "text/plain")).size_bytes == 4
    finally:
        server.stop()


def _start_upload(port: int, *, megabytes: int) -> socket.socket:
    """An upload that sends ``megabytes`` of its file and then keeps the connection open."""
    boundary = "killed"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    total = len(head) + 64 * 1024 * 1024
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        (
            "POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: k\r\nanthropic-version: 2023-06-01\r\n"
            f"content-type: multipart/form-data; boundary={boundary}\r\ncontent-length: {total}\r\n\r\n"
        ).encode()
        + head
    )
    sock.sendall(b"q" * (megabytes * 1024 * 1024))
    return sock
