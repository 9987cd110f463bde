"""A minimal OpenAI-compatible upstream for benchmarks: answers /v1/chat/completions after
a fixed delay with a fixed completion (as SSE chunks when the body asks for a stream). Raw
ASGI on uvicorn, so it costs little CPU.

    python bench/fake_openai_upstream.py PORT LATENCY_MS
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import uvicorn

LATENCY = 0.05  # seconds; the command line's LATENCY_MS when run as a script
BODY = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "A short fixed answer."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
)


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:  # type: ignore[type-arg]
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": "bench",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else []}
    if usage is not None:
        chunk["usage"] = usage
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


STREAM = b"".join(
    [
        _chunk({"role": "assistant", "content": ""}),
        *(_chunk({"content": word}) for word in ("A ", "short ", "fixed ", "answer.")),
        _chunk({}, "stop"),
        _chunk({}, usage={"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}),
        b"data: [DONE]\n\n",
    ]
)


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    body = b""
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await asyncio.sleep(LATENCY)
    if b'"stream":true' in body.replace(b" ", b""):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": STREAM})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


def start_upstream(latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    """This upstream in a child process on a free port, once it answers: (process, URL)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from support.server import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, str(port), str(latency_ms)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"{url}/v1/chat/completions", json={}, timeout=2)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the fake upstream did not start")


if __name__ == "__main__":
    LATENCY = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.05
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
