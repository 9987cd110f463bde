"""Incremental JSON reading over a byte stream, one value at a time.

The stdlib decoder's ``raw_decode`` parses a single value at C speed and says where it
ended; this class feeds it a sliding window of the stream so that a document of any size
is read with memory bounded by its largest single value. Used to ingest batch bodies of
hundreds of megabytes without holding them whole.
"""

from __future__ import annotations

import codecs
import json
from typing import IO, Any

import orjson

_WHITESPACE = " \t\n\r"
_READ_SIZE = 1 << 20
_COMPACT_AT = 1 << 20
# A syntax error this close to the end of the window may only mean the window cut a
# value short: read more and try again before calling it an error.
_BOUNDARY_SLACK = 64


class JsonSyntaxError(ValueError):
    """The document is not valid JSON; ``str()`` reads like Python's own message."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads_document(data: bytes) -> Any:
    """A whole JSON document, parsed as the API parses it: orjson first (fast; its words
    for a broken surrogate pair are the API's); what it refuses for other reasons goes to
    the stdlib parser, which words errors like the API and keeps integers of any size."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "surrogate" in exc.msg:
            raise JsonSyntaxError(str(exc)) from None
    return loads_strict(data)


def loads_strict(data: bytes | str) -> Any:
    """Parse a whole JSON document, rejecting ``NaN``/``Infinity`` like real JSON parsers."""
    try:
        return _DECODER.decode(data.decode("utf-8") if isinstance(data, bytes) else data)
    except RecursionError:
        raise JsonSyntaxError("nesting is too deep") from None
    except UnicodeDecodeError as exc:
        raise JsonSyntaxError(f"invalid UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError(str(exc)) from None
    except ValueError as exc:
        raise JsonSyntaxError(str(exc)) from None


class JsonStream:
    """A cursor over a JSON text read from a binary stream in windows."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._bytes_read = 0
        # Absolute character offset and line count of what was dropped from the window.
        self._base = 0
        self._lines_before = 0
        self._last_newline_before = -1
        self._last = (0, 0)  # the window span of the value read last

    # -- window management ---------------------------------------------------------

    def _compact(self) -> None:
        if self._pos >= _COMPACT_AT:
            dropped = self._buf[: self._pos]
            newline = dropped.rfind("\n")
            if newline >= 0:
                self._last_newline_before = self._base + newline
            self._base += len(dropped)
            self._lines_before += dropped.count("\n")
            self._buf = self._buf[self._pos :]
            self._pos = 0

    def _fill(self, at_least: int = 0) -> bool:
        """Append more text to the window; False at end of stream."""
        if self._eof:
            return False
        data = self._stream.read(max(_READ_SIZE, at_least))
        try:
            if not data:
                self._eof = True
                self._buf += self._decoder.decode(b"", final=True)
                return False
            # Compact only when text is added, so positions a caller holds from a failed
            # parse stay valid when the stream turns out to be at its end.
            self._compact()
            self._buf += self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise JsonSyntaxError(f"invalid UTF-8 at byte {self._bytes_read + exc.start}") from None
        self._bytes_read += len(data)
        return True

    def _error(self, message: str, pos: int) -> JsonSyntaxError:
        absolute = self._base + pos
        line = self._lines_before + self._buf.count("\n", 0, pos) + 1
        last_newline = self._buf.rfind("\n", 0, pos)
        if last_newline >= 0:
            column = pos - last_newline
        else:
            column = absolute - self._last_newline_before
        return JsonSyntaxError(f"{message}: line {line} column {column} (char {absolute})")

    # -- reading -------------------------------------------------------------------

    def peek(self) -> str:
        """The next non-whitespace character, or '' at the end of the document."""
        while True:
            buf, pos = self._buf, self._pos
            n = len(buf)
            while pos < n and buf[pos] in _WHITESPACE:
                pos += 1
            self._pos = pos
            if pos < n:
                return buf[pos]
            if not self._fill():
                return ""

    def expect(self, char: str, message: str) -> None:
        if self.peek() != char:
            raise self._error(message, self._pos)
        self._pos += 1

    def error_here(self, message: str) -> JsonSyntaxError:
        self.peek()
        return self._error(message, self._pos)

    def read_value(self) -> Any:
        """Decode the next JSON value (after whitespace) and move past it."""
        if self.peek() == "":
            raise self._error("Expecting value", self._pos)
        while True:
            buf, pos = self._buf, self._pos
            try:
                value, end = _DECODER.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                near_end = exc.pos >= len(buf) - _BOUNDARY_SLACK or exc.msg.startswith("Unterminated string")
                if near_end and self._fill(len(buf) - pos):
                    continue
                raise self._error(exc.msg, exc.pos) from None
            except RecursionError:
                raise self._error("Nesting is too deep", pos) from None
            except ValueError as exc:  # NaN/Infinity, integers past the digit limit
                raise self._error(str(exc), pos) from None
            # A number that ends exactly at the window's edge may continue in the stream.
            if end == len(buf) and isinstance(value, (int, float)) and not isinstance(value, bool):
                if self._fill():
                    continue
            self._last = (pos, end)
            self._pos = end
            return value

    def check_last_value(self) -> None:
        """Raise the API's error if the value just read holds a broken surrogate pair (the
        stdlib decoder lets a lone ``\\ud800`` through; nothing downstream can encode it)."""
        start, end = self._last
        try:
            orjson.loads(self._buf[start:end])
        except orjson.JSONDecodeError as exc:
            if "surrogate" in exc.msg:
                raise self._error(exc.msg, start + exc.pos) from None

    def at_end(self) -> bool:
        return self.peek() == ""
