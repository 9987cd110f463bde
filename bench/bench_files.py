"""Files benchmark against a real server process: upload a large file through each API,
then download it.

For each API (Anthropic's Files API; OpenAI's /v1/files with purpose=user_data and with
purpose=batch, whose upload is checked line by line as JSONL): seconds for the upload to
return 200, the server's peak RSS above what it held when idle (VmHWM; a fresh server per
row, so each row's peak is its own), and the download in MB/s.

    .venv/bin/python bench/bench_files.py                    # SQLite, 200 MB
    .venv/bin/python bench/bench_files.py --database pg      # PostgreSQL
    .venv/bin/python bench/bench_files.py --megabytes 50

The client streams the multipart body from a generator (64 KiB pieces), so the figures are
the server's, not an SDK's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from support.server import ServerProcess  # noqa: E402

ANTHROPIC = {"x-api-key": "bench", "anthropic-version": "2023-06-01"}
OPENAI = {"authorization": "Bearer bench"}
BOUNDARY = "benchboundary"
PIECE = 64 * 1024

CONFIG = """
[files]
max_file_bytes = {limit}
batch_max_bytes = {limit}
batch_max_lines = 10000000
downloadable_uploads = true

[[models]]
id = "*"
backend = "simulator"
"""


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def jsonl_piece() -> bytes:
    line = json.dumps(
        {"custom_id": "r", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": [{"role": "user", "content": "x" * 200}]}}
    ).encode() + b"\n"
    return line * (PIECE // len(line))


def multipart(size: int, purpose: str | None) -> tuple[int, Iterator[bytes]]:
    fields = b""
    if purpose is not None:
        fields = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n').encode()
    head = fields + (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.{"jsonl" if purpose == "batch" else "bin"}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    piece = jsonl_piece() if purpose == "batch" else bytes(range(256)) * (PIECE // 256)
    count = size // len(piece)

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(count):
            yield piece
        yield tail

    return len(head) + count * len(piece) + len(tail), body()


def one_row(database: str, workdir: Path, api: str, purpose: str | None, size: int) -> dict[str, object]:
    server = ServerProcess(database, config_text=CONFIG.format(limit=size + 1024 * 1024), workdir=workdir)
    server.start()
    headers = ANTHROPIC if api == "anthropic" else OPENAI
    try:
        with httpx.Client(base_url=server.url, timeout=600) as http:
            http.get("/v1/files", headers=headers).raise_for_status()  # warm
            idle = rss_mb(server.proc.pid)
            length, body = multipart(size, purpose)
            started = time.perf_counter()
            reply = http.post(
                "/v1/files",
                content=body,
                headers={**headers, "content-type": f"multipart/form-data; boundary={BOUNDARY}", "content-length": str(length)},
            )
            upload_s = time.perf_counter() - started
            reply.raise_for_status()
            file_id = reply.json()["id"]
            peak_upload = rss_mb(server.proc.pid)
            started = time.perf_counter()
            received = 0
            with http.stream("GET", f"/v1/files/{file_id}/content", headers=headers) as download:
                download.raise_for_status()
                for chunk in download.iter_raw(1024 * 1024):
                    received += len(chunk)
            download_s = time.perf_counter() - started
            peak = rss_mb(server.proc.pid)
    finally:
        server.stop()
    megabytes = received / 1e6
    return {
        "api": api if purpose is None else f"{api} purpose={purpose}",
        "megabytes": round(megabytes, 1),
        "upload_s": round(upload_s, 2),
        "upload_mb_per_s": round(megabytes / upload_s, 1),
        "idle_rss_mb": round(idle),
        "peak_rss_above_idle_mb_upload": round(peak_upload - idle),
        "peak_rss_above_idle_mb": round(peak - idle),
        "download_mb_per_s": round(megabytes / download_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default=None, help="'pg' for a temporary PostgreSQL database, or a URL")
    parser.add_argument("--megabytes", type=int, default=200)
    args = parser.parse_args()
    size = args.megabytes * 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for api, purpose in (("anthropic", None), ("openai", "user_data"), ("openai", "batch")):
            temporary = args.database == "pg"
            database = create_postgres_database() if temporary else (args.database or f"sqlite:///{workdir / f'{purpose}.db'}")
            try:
                row = one_row(database, workdir, api, purpose, size)
            finally:
                if temporary:
                    drop_postgres_database(database)
            row["database"] = "postgresql" if database.startswith("postgresql") else "sqlite"
            row["at"] = datetime.now().isoformat(timespec="seconds")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
