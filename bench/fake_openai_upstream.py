"""A minimal OpenAI-compatible upstream for benchmarks: answers /v1/chat/completions after
a fixed delay with a fixed completion. Raw ASGI on uvicorn, so it costs little CPU.

    python bench/fake_openai_upstream.py PORT LATENCY_MS
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvicorn

LATENCY = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.05
BODY = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "A short fixed answer."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
)


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await asyncio.sleep(LATENCY)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
