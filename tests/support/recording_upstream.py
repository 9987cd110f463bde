"""A fake upstream (OpenAI chat completions and Anthropic messages) that records every
request body it is sent, to check what a backend was given."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

CHAT_REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "recorded",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
MESSAGE_REPLY = {
    "id": "msg_01recorded",
    "type": "message",
    "role": "assistant",
    "model": "recorded",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 1},
}


class RecordingUpstream:
    def __init__(self) -> None:
        self.bodies: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = orjson.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
                with upstream._lock:
                    upstream.bodies.append((self.path, body))
                reply = CHAT_REPLY if self.path.endswith("/chat/completions") else MESSAGE_REPLY
                data = orjson.dumps(reply)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> RecordingUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def recorded(self, path_suffix: str) -> list[Any]:
        with self._lock:
            return [body for path, body in self.bodies if path.endswith(path_suffix)]
