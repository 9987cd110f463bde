"""An Anthropic-compatible upstream whose streams are broken on purpose: the last user
message names the fault (``no-start``, ``no-block-start``, ``blocks-open``, ``no-stop``,
``duplicate-start``, ``cut``, or anything else for a valid stream)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

START = {
    "type": "message_start",
    "message": {
        "id": "msg_01upstream", "type": "message", "role": "assistant", "model": "upstream", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 4, "output_tokens": 1},
    },
}
BLOCK = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
DELTAS = [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}} for t in ("Hel", "lo")]
BLOCK_STOP = {"type": "content_block_stop", "index": 0}
END = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 2}}
STOP = {"type": "message_stop"}

FAULTS: dict[str, list[dict[str, Any]]] = {
    "no-start": [BLOCK, *DELTAS, BLOCK_STOP, END, STOP],
    "no-block-start": [START, *DELTAS, BLOCK_STOP, END, STOP],
    "blocks-open": [START, BLOCK, *DELTAS, END, STOP],
    "no-stop": [START, BLOCK, *DELTAS, BLOCK_STOP, END],
    "duplicate-start": [START, START, BLOCK, *DELTAS, BLOCK_STOP, END, STOP],
    "cut": [START, BLOCK, *DELTAS],
    "valid": [START, BLOCK, *DELTAS, BLOCK_STOP, END, STOP],
}


class BrokenStreamUpstream:
    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = orjson.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
                fault = body["messages"][-1]["content"]
                events = FAULTS.get(fault if isinstance(fault, str) else "", FAULTS["valid"])
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                for event in events:
                    self.wfile.write(b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> BrokenStreamUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
