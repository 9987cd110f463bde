"""The create-batch body: ``{"requests": [{"custom_id": ..., "params": {...}}, ...]}``.

Only the envelope is checked here, with the API's pydantic-style messages; each line's
``params`` are validated when the line is processed. The body is read as a stream so a
256 MB batch never sits in memory as Python objects: lines come out in chunks, and the
caller writes each chunk before asking for the next.

Which error wins when a body has several mirrors a pydantic model validated whole:
a JSON syntax error anywhere first; then the first field error in document order; then
too many requests; then a duplicate ``custom_id``. So once an error is found the rest of
the body is still read (without producing lines) to learn whether a stronger one follows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import IO, Any

import orjson

from .errors import MAX_ECHO, ApiError, bounded, invalid_request
from .jsonscan import JsonStream, JsonSyntaxError

CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_CUSTOM_ID_RE = re.compile(CUSTOM_ID_PATTERN)
CUSTOM_ID_MAX_LENGTH = 64

OBJECT_EXPECTED = "Input should be a valid dictionary or object to extract fields from"
DICT_EXPECTED = "Input should be a valid dictionary"


@dataclass(slots=True)
class BatchLine:
    index: int
    custom_id: str
    params: bytes  # the line's params as JSON, stored as submitted (re-encoded compactly)
    model: str | None


def dumps_params(params: dict[str, Any]) -> bytes:
    """Params as compact JSON. orjson stops at 64-bit integers and 255 levels of nesting;
    such params are kept as they are and refused later by the validator with a precise
    message, like any other bad line."""
    try:
        return orjson.dumps(params)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(params, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def not_json(detail: str) -> ApiError:
    return invalid_request(f"The request body is not valid JSON: {detail}")


def custom_id_error(value: Any) -> str | None:
    """The pydantic message for a bad ``custom_id``, or None when it is good."""
    if not isinstance(value, str):
        return "Input should be a valid string"
    if len(value) < 1:
        return "String should have at least 1 character"
    if len(value) > CUSTOM_ID_MAX_LENGTH:
        return f"String should have at most {CUSTOM_ID_MAX_LENGTH} characters"
    if _CUSTOM_ID_RE.match(value) is None or value.endswith("\n"):
        return f"String should match pattern '{CUSTOM_ID_PATTERN}'"
    return None


def line_error(index: int, item: Any) -> str | None:
    """The first envelope error in one element of ``requests``, as ``path: message``."""
    where = f"requests.{index}"
    if not isinstance(item, dict):
        return f"{where}: {OBJECT_EXPECTED}"
    if "custom_id" not in item:
        return f"{where}.custom_id: Field required"
    problem = custom_id_error(item["custom_id"])
    if problem:
        return f"{where}.custom_id: {problem}"
    if "params" not in item:
        return f"{where}.params: Field required"
    if not isinstance(item["params"], dict):
        return f"{where}.params: {DICT_EXPECTED}"
    for key in item:
        if key not in ("custom_id", "params"):
            return f"{where}.{bounded(key, MAX_ECHO)}: Extra inputs are not permitted"
    return None


class BatchBodyReader:
    """Reads a create-batch body from a binary stream, yielding validated lines in chunks.

    ``next_chunk`` returns lines until the body is used up, then ``[]``. It raises
    :class:`ApiError` (400) as soon as the verdict on a bad body is certain, which may be
    only at the end of the stream.
    """

    def __init__(self, stream: IO[bytes], max_requests: int) -> None:
        self._json = JsonStream(stream)
        self._max_requests = max_requests
        self._count = 0
        self._seen: set[str] = set()
        self._field_error: str | None = None
        self._duplicate: str | None = None
        self._state = "start"  # start -> items -> done

    @property
    def count(self) -> int:
        return self._count

    def next_chunk(self, size: int) -> list[BatchLine]:
        try:
            return self._next_chunk(size)
        except JsonSyntaxError as exc:
            raise not_json(str(exc)) from None

    def _next_chunk(self, size: int) -> list[BatchLine]:
        if self._state == "start":
            self._open()
        lines: list[BatchLine] = []
        while self._state == "items" and len(lines) < size:
            line = self._next_item()
            if line is not None and self._clean():
                lines.append(line)
            if not self._clean():
                lines.clear()  # nothing of a bad body is written; read on for the verdict
        if self._state == "done":
            self._finish()
        return lines

    def _clean(self) -> bool:
        return self._field_error is None and self._duplicate is None and self._count <= self._max_requests

    # -- structure -----------------------------------------------------------------

    def _open(self) -> None:
        js = self._json
        first = js.peek()
        if first == "":
            raise js.error_here("Expecting value")
        if first != "{":
            js.read_value()
            self._require_end()
            raise invalid_request(OBJECT_EXPECTED)
        js.expect("{", "Expecting value")
        self._extras: list[str] = []
        self._requests_seen = False
        if js.peek() == "}":
            js.expect("}", "Expecting '}'")
            self._close_object()
            return
        self._next_member()

    def _next_member(self) -> None:
        """Read object members until the ``requests`` array opens or the object ends."""
        js = self._json
        while True:
            if js.peek() != '"':
                raise js.error_here("Expecting property name enclosed in double quotes")
            key = js.read_value()
            js.expect(":", "Expecting ':' delimiter")
            if key == "requests" and not self._requests_seen:
                self._requests_seen = True
                if js.peek() == "[":
                    js.expect("[", "Expecting value")
                    self._state = "items"
                    self._first_item = True
                    return
                value = js.read_value()
                self._requests_not_list(value)
            else:
                js.read_value()
                if key != "requests":
                    self._extras.append(key)
                elif self._field_error is None:
                    # A repeated key is the last one's everywhere else (as JSON parsers
                    # read it), but the first list was already read as it streamed in.
                    self._field_error = "requests: the key appears more than once; send one list of requests"
            if not self._after_member():
                return

    def _after_member(self) -> bool:
        """After a member: True if another member follows, False once the object closed."""
        js = self._json
        char = js.peek()
        if char == ",":
            js.expect(",", "Expecting ',' delimiter")
            return True
        if char == "}":
            js.expect("}", "Expecting ',' delimiter")
            self._close_object()
            return False
        raise js.error_here("Expecting ',' delimiter")

    def _close_object(self) -> None:
        self._require_end()
        self._state = "done"

    def _require_end(self) -> None:
        if not self._json.at_end():
            raise self._json.error_here("Extra data")

    def _requests_not_list(self, value: Any) -> None:
        if self._field_error is None:
            self._field_error = "requests: Input should be a valid list"

    # -- items ---------------------------------------------------------------------

    def _next_item(self) -> BatchLine | None:
        js = self._json
        char = js.peek()
        if char == "]":
            js.expect("]", "Expecting value")
            self._state = "members"
            if self._after_member():
                self._next_member()
            return None
        if not self._first_item:
            js.expect(",", "Expecting ',' delimiter")
        self._first_item = False
        item = js.read_value()
        index = self._count
        self._count += 1
        if self._field_error is not None:
            return None
        problem = line_error(index, item)
        if problem is not None:
            self._field_error = problem
            return None
        if self._count > self._max_requests:
            return None
        custom_id = item["custom_id"]
        if custom_id in self._seen:
            if self._duplicate is None:
                self._duplicate = custom_id
            return None
        self._seen.add(custom_id)
        params = item["params"]
        model = params.get("model")
        try:
            encoded = orjson.dumps(params)
        except (orjson.JSONEncodeError, TypeError):
            js.check_last_value()  # a lone surrogate: the body is not valid JSON
            encoded = dumps_params(params)
        # The model is kept in a column of its own (for routing claims); PostgreSQL's text
        # refuses NUL, and no model has one in its name: such a line errors when it runs.
        usable = isinstance(model, str) and "\x00" not in model
        return BatchLine(index, custom_id, encoded, model if usable else None)

    def _finish(self) -> None:
        if self._field_error is not None:
            raise invalid_request(self._field_error)
        if not self._requests_seen:
            raise invalid_request("requests: Field required")
        if self._count == 0:
            raise invalid_request("requests: List should have at least 1 item after validation, not 0")
        if self._count > self._max_requests:
            raise invalid_request(
                f"requests: List should have at most {self._max_requests} items after validation, not {self._count}"
            )
        if self._extras:
            raise invalid_request(f"{bounded(self._extras[0], MAX_ECHO)}: Extra inputs are not permitted")
        if self._duplicate is not None:
            raise invalid_request(
                "requests: custom_id's must be unique within a batch. "
                f"Duplicate custom_id found: {self._duplicate}"
            )
