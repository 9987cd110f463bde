"""Making an upstream's Messages stream a valid one, whatever the upstream sent.

A pass-through backend must hand its clients the event order the SDKs rely on
(``message_start``; per block ``content_block_start`` / deltas / ``content_block_stop``;
``message_delta``; ``message_stop``). Upstreams break it: llama.cpp's server, for one,
sometimes sends no ``message_start`` at all, and the Python SDK's ``get_final_message()``
then fails. :class:`StreamRepair` takes the upstream's events one at a time and gives back
a valid sequence: it makes up a missing ``message_start``, opens a block before its first
delta, closes blocks left open, and ends the message when the upstream stopped early.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import responses

_DELTA_BLOCKS: dict[str, dict[str, Any]] = {
    "text_delta": {"type": "text", "text": "", "citations": None},
    "thinking_delta": {"type": "thinking", "thinking": "", "signature": ""},
    "signature_delta": {"type": "thinking", "thinking": "", "signature": ""},
    "citations_delta": {"type": "text", "text": "", "citations": None},
}


class StreamCutShort(Exception):
    """The upstream stopped sending before the message was complete."""


class StreamRepair:
    def __init__(self, model: str, input_tokens: int, service_tier: responses.ServiceTier) -> None:
        self.model = model
        self.input_tokens = input_tokens  # for a message_start made up here (an estimate)
        self.service_tier = service_tier
        self.started = False
        self.stopped = False
        self.delta_sent = False
        self.output_tokens = 0
        self._open: int | None = None  # our index of the block now open
        self._next = 0
        self._indexes: dict[int, int] = {}  # upstream index -> ours
        self._tool_blocks: set[int] = set()
        self.repaired: list[str] = []  # what had to be made up, for the logs

    def _start(self) -> Iterator[dict[str, Any]]:
        if not self.started:
            self.started = True
            self.repaired.append("message_start")
            head = responses.message(
                model=self.model,
                content=[],
                stop_reason=None,
                stop_sequence=None,
                usage=responses.usage(self.input_tokens, 0, service_tier=self.service_tier),
            )
            yield {"type": "message_start", "message": head}

    def _close(self) -> Iterator[dict[str, Any]]:
        if self._open is not None:
            yield {"type": "content_block_stop", "index": self._open}
            self._open = None

    def _open_block(self, upstream_index: int, block: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from self._close()
        index = self._indexes[upstream_index] = self._next
        self._next += 1
        self._open = index
        if block.get("type") in ("tool_use", "server_tool_use"):
            self._tool_blocks.add(index)
        yield {"type": "content_block_start", "index": index, "content_block": block}

    def feed(self, event: dict[str, Any]) -> Iterator[dict[str, Any]]:
        kind = event.get("type")
        if self.stopped:
            return  # nothing follows message_stop
        if kind == "ping":
            yield event
            return
        if kind == "message_start":
            if self.started:
                return  # a second start: the first one counts
            self.started = True
            yield event
            return
        yield from self._start()
        if kind == "content_block_start":
            upstream = event.get("index", self._next)
            yield from self._open_block(upstream, event.get("content_block") or {"type": "text", "text": ""})
        elif kind == "content_block_delta":
            upstream = event.get("index", -1)
            delta = event.get("delta") or {}
            ours = self._indexes.get(upstream)
            if ours is None or ours != self._open:
                if ours is not None and ours < self._next - 1:
                    return  # a delta for a block already closed: nowhere valid to put it
                block = _DELTA_BLOCKS.get(delta.get("type", ""))
                if block is None:
                    return  # a tool's input with no tool_use start: its id and name are unknown
                self.repaired.append("content_block_start")
                yield from self._open_block(upstream, dict(block))
                ours = self._open
            self.output_tokens += 1
            yield {**event, "index": ours}
        elif kind == "content_block_stop":
            ours = self._indexes.get(event.get("index", -1))
            if ours is not None and ours == self._open:
                yield from self._close()
        elif kind == "message_delta":
            yield from self._close()
            self.delta_sent = True
            yield event
        elif kind == "message_stop":
            yield from self._end()
        else:
            yield event  # unknown names are the client's to ignore (the versioning policy)

    def finish(self) -> Iterator[dict[str, Any]]:
        """The upstream's stream ended. After its ``message_delta`` the message is whole
        (a missing ``message_stop`` is added); before it, the message may be cut short,
        and that is an error (:class:`StreamCutShort`), not a made-up ending."""
        if self.stopped:
            return
        if not self.delta_sent:
            raise StreamCutShort("the upstream's stream ended before its message did")
        yield from self._end()

    def _end(self) -> Iterator[dict[str, Any]]:
        yield from self._start()
        yield from self._close()
        if not self.delta_sent:
            self.repaired.append("message_delta")
            self.delta_sent = True
            yield {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if self._tool_blocks else "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": self.output_tokens},
            }
        self.stopped = True
        yield {"type": "message_stop"}
