"""``multipart/form-data`` read as a stream of parts, each part's bytes as they arrive.

python-multipart (the parser Starlette's own form parsing uses) is push-based; this turns
it around so that a route can hand one part's bytes to the file store chunk by chunk and
read the small fields around it, without the body ever being held whole in memory or on
disk. A body that ends before the closing boundary raises ``truncated`` (so whatever was
being stored is dropped); header blocks and plain fields are capped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from ..protocol.errors import invalid_request
from .bodies import chunks as body_chunks

MAX_HEADER_BYTES = 16 * 1024  # one part's header block
MAX_FIELD_BYTES = 64 * 1024  # a plain (non-file) field


def truncated() -> Exception:
    return invalid_request("The multipart body ended before its closing boundary; nothing was stored")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@dataclass
class Part:
    name: str
    filename: str | None  # None: a plain field
    content_type: str | None
    _form: MultipartForm

    def data(self) -> AsyncIterator[bytes]:
        """The part's bytes as they arrive (consume them before asking for the next part)."""
        return self._form._part_data()

    async def text(self) -> str:
        pieces = []
        size = 0
        async for piece in self.data():
            size += len(piece)
            if size > MAX_FIELD_BYTES:
                raise invalid_request(f"{self.name}: the field is longer than {MAX_FIELD_BYTES} bytes")
            pieces.append(piece)
        return _decode(b"".join(pieces))


class MultipartForm:
    def __init__(self, request: Request, idle_timeout: float) -> None:
        content_type, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            raise invalid_request("Content-Type must be multipart/form-data with a boundary")
        self._events: deque[tuple[Any, ...]] = deque()
        self._body = body_chunks(request, idle_timeout).__aiter__()
        self._ended = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._header_bytes = 0
        self._in_part = False

        def on_header_field(data: bytes, start: int, end: int) -> None:
            self._grow_headers(end - start)
            self._header_field += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            self._grow_headers(end - start)
            self._header_value += data[start:end]

        def on_header_end() -> None:
            self._headers[self._header_field.decode("latin-1").strip().lower()] = bytes(self._header_value).strip()
            self._header_field.clear()
            self._header_value.clear()

        def on_part_begin() -> None:
            self._headers = {}
            self._header_bytes = 0

        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": lambda: self._events.append(("part", dict(self._headers))),
                "on_part_data": lambda data, start, end: self._events.append(("data", data[start:end])),
                "on_part_end": lambda: self._events.append(("part_end",)),
                "on_end": lambda: self._events.append(("end",)),
            },
        )

    def _grow_headers(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            raise invalid_request(f"A multipart part's headers are longer than {MAX_HEADER_BYTES} bytes")

    async def _next_event(self) -> tuple[Any, ...]:
        while not self._events:
            if self._ended:
                raise truncated()
            try:
                chunk = await anext(self._body)
            except (StopAsyncIteration, ClientDisconnect):
                # A client gone mid-body is a truncated body: what it sent is dropped.
                self._ended = True
                raise truncated() from None
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise invalid_request(f"The multipart body is malformed: {exc}") from None
        return self._events.popleft()

    async def parts(self) -> AsyncIterator[Part]:
        """Each part once its headers are in; the body must end with the closing boundary."""
        while True:
            event = await self._next_event()
            if event[0] == "end":
                return
            if event[0] == "data":  # bytes of a part the caller did not read
                continue
            if event[0] == "part_end":
                self._in_part = False
                continue
            headers: dict[str, bytes] = event[1]
            disposition, options = parse_options_header(headers.get("content-disposition", b"").decode("latin-1"))
            if disposition != b"form-data" or b"name" not in options:
                raise invalid_request("Each multipart part needs a Content-Disposition: form-data header with a name")
            filename = options.get(b"filename")
            declared = headers.get("content-type")
            self._in_part = True
            yield Part(
                name=_decode(options[b"name"]),
                filename=None if filename is None else _decode(filename),
                content_type=None if declared is None else declared.decode("latin-1"),
                _form=self,
            )
            # Whatever the caller left unread of this part is skipped above.

    async def _part_data(self) -> AsyncIterator[bytes]:
        while self._in_part:
            event = await self._next_event()
            if event[0] == "data":
                if event[1]:
                    yield event[1]
            elif event[0] == "part_end":
                self._in_part = False
                return
            else:  # pragma: no cover - the parser ends a part before anything else
                raise truncated()
