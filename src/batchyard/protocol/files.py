"""Wire shapes of the two Files APIs over one store, and the checks on what is uploaded.

One file, two views. Anthropic's file object is ``{id, type: "file", filename, mime_type,
size_bytes, created_at (RFC 3339), downloadable, expires_at}``; OpenAI's is ``{id, object:
"file", bytes, created_at (Unix seconds), expires_at, filename, purpose, status,
status_details}``. Both show the same id. A file uploaded through Anthropic's API has the
purpose ``user_data`` (OpenAI's "any use" purpose) when seen through OpenAI's; a file
uploaded through OpenAI's has the MIME type it was sent with (or one sniffed from its
first bytes or its name) when seen through Anthropic's. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from typing import Any

import orjson

from .errors import ApiError, invalid_request
from .timestamps import to_rfc3339

ANTHROPIC_PURPOSE = "user_data"  # what an Anthropic upload is, seen through OpenAI's API
OPENAI_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
SERVER_PURPOSES = ("batch_output",)  # files the server makes (the Batch API's output)
MAX_FILENAME = 500
ANTHROPIC_TTL_RANGE = (3600, 7_776_000)  # expires_in_seconds: one hour to ninety days
OPENAI_TTL_RANGE = (3600, 2_592_000)  # expires_after.seconds: one hour to thirty days
PAGE_PREFIX = "page_"

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
PDF_TYPE = "application/pdf"

_MAGIC = (
    (b"%PDF-", PDF_TYPE),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


# -- file objects ------------------------------------------------------------------


def anthropic_file(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "type": "file",
        "filename": record.filename,
        "mime_type": record.mime_type,
        "size_bytes": record.size_bytes,
        "created_at": to_rfc3339(record.created_at),
        "downloadable": record.downloadable,
        "expires_at": to_rfc3339(record.expires_at),
    }


def openai_file(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.size_bytes,
        "created_at": record.created_at // 1_000_000,
        "expires_at": None if record.expires_at is None else record.expires_at // 1_000_000,
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "status_details": None,
    }


def anthropic_deleted(file_id: str) -> dict[str, Any]:
    return {"id": file_id, "type": "file_deleted"}


def openai_deleted(file_id: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "deleted": True}


def anthropic_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """Both cursor styles at once: ``first_id``/``last_id``/``has_more`` for the SDKs that
    page with ``before_id``/``after_id``, ``next_page`` for those that send ``page``."""
    last = data[-1]["id"] if data else None
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": last,
        "next_page": page_token(last) if has_more and last else None,
    }


def openai_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def page_token(after_id: str) -> str:
    return PAGE_PREFIX + base64.urlsafe_b64encode(after_id.encode()).decode().rstrip("=")


def parse_page_token(token: str) -> str:
    """The id a ``page`` cursor continues after."""
    if not token.startswith(PAGE_PREFIX):
        raise invalid_request("page: Invalid page cursor")
    body = token[len(PAGE_PREFIX) :]
    try:
        decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    except (binascii.Error, ValueError):
        raise invalid_request("page: Invalid page cursor") from None
    if not decoded.startswith("file_"):
        raise invalid_request("page: Invalid page cursor")
    return decoded


def content_disposition(filename: str) -> str:
    """``attachment`` with the name percent-encoded (RFC 5987): any byte of a name is data,
    and none can break out of the header."""
    from urllib.parse import quote

    return f"attachment; filename*=utf-8''{quote(filename, safe='')}"


# -- errors ------------------------------------------------------------------------


class FileProblem(ApiError):
    """A file error in Anthropic's shape (with ``error.details.error_code`` where the SDK
    has a class for it), that knows its OpenAI form."""

    error_code: str | None = None

    def envelope(self, request_id: str | None) -> dict[str, Any]:
        body = super().envelope(request_id)
        if self.error_code is not None:
            body["error"]["details"] = {"error_code": self.error_code}
        return body

    def openai(self) -> ApiError:
        return ApiError(self.error_type, self.message, status=self.status, headers=self.headers, code=self.error_code)


class FileNotFound(FileProblem):
    def __init__(self, file_id: str) -> None:
        shown = file_id if len(file_id) <= 128 else file_id[:128] + "..."
        super().__init__("not_found_error", f"File not found: {shown}")
        self.file_id = shown

    def openai(self) -> ApiError:
        # OpenAI's own words and type for a missing object.
        return ApiError("invalid_request_error", f"No such File object: {self.file_id}", status=404, param="id")


class FileExpired(FileProblem):
    error_code = "file_expired"

    def __init__(self, file_id: str) -> None:
        super().__init__("not_found_error", f"File {file_id} has expired; its content is no longer available")


class FileNotDownloadable(FileProblem):
    error_code = "file_not_downloadable"

    def __init__(self, file_id: str) -> None:
        super().__init__(
            "invalid_request_error",
            f"File {file_id} is not downloadable: only files the server created can be downloaded",
        )


class StorageQuotaExceeded(FileProblem):
    error_code = "storage_quota_exceeded"

    def __init__(self, limit: int) -> None:
        super().__init__(
            "invalid_request_error",
            f"This upload would pass the workspace's file storage quota of {limit} bytes; "
            "delete files to free space, then retry the upload",
            headers={"connection": "close"},
        )


class FileTooLarge(FileProblem):
    def __init__(self, limit: int, what: str = "File") -> None:
        # Closing the connection is what stops the client's upload.
        super().__init__(
            "request_too_large",
            f"{what} exceeds the maximum size of {limit} bytes",
            status=413,
            headers={"connection": "close"},
        )


def missing_param(name: str) -> ApiError:
    return ApiError(
        "invalid_request_error", f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
    )


def invalid_param(name: str, message: str) -> ApiError:
    return ApiError("invalid_request_error", message, param=name, code="invalid_value")


# -- what was uploaded -------------------------------------------------------------


def clean_filename(raw: str | None, mime_type: str) -> str:
    """The name a file is listed under: only the last path component of what the client
    sent (a name is data, never a path); an empty one becomes ``unnamed`` plus the
    extension of its MIME type."""
    name = re.split(r"[/\\]", raw or "")[-1].replace("\x00", "")
    if name in ("", ".", ".."):
        name = "unnamed" + (mimetypes.guess_extension(mime_type, strict=False) or "")
    if len(name) > MAX_FILENAME:
        raise invalid_request(f"file.filename: String should have at most {MAX_FILENAME} characters")
    return name


def sniff_mime(head: bytes, declared: str | None, filename: str | None) -> str:
    """A file's MIME type: what its first bytes show for the types the Messages API reads
    (PDF, the four image formats), else the part's declared type, else a guess from its
    name, else ``text/plain`` for UTF-8 text and ``application/octet-stream`` for the rest."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    declared = (declared or "").split(";", 1)[0].strip().lower()
    if declared and declared != "application/octet-stream" and "/" in declared and len(declared) <= 255:
        return declared
    guessed, _ = mimetypes.guess_type(filename or "", strict=False)
    if guessed:
        return guessed
    if head:
        try:
            head.decode("utf-8")
            return "text/plain"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 3:  # a character cut at the end of the sample
                return "text/plain"
    return "application/octet-stream"


def ttl_seconds(raw: str, name: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    try:
        seconds = int(raw.strip())
    except ValueError:
        raise invalid_param(name, f"{name}: Input should be a valid integer") from None
    if not low <= seconds <= high:
        raise invalid_param(name, f"{name}: must be between {low} and {high} seconds")
    return seconds


class JsonlChecker:
    """Checks a ``purpose=batch`` upload as it streams: every non-blank line a JSON object,
    at most ``max_lines`` lines. Holds one partial line at a time, and refuses a line
    longer than ``max_line_bytes`` (no batch line that long could run)."""

    MAX_REPORTED = 10

    def __init__(self, max_lines: int, max_line_bytes: int) -> None:
        self.max_lines = max_lines
        self.max_line_bytes = max_line_bytes
        self.lines = 0
        self.errors: list[tuple[int, str]] = []
        self._partial = bytearray()
        self._number = 0
        self._fatal: str | None = None

    def feed(self, chunk: bytes) -> None:
        if self._fatal is not None:
            return
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._partial += chunk[start:]
                if len(self._partial) > self.max_line_bytes:
                    self._fatal = f"line {self._number + 1}: longer than {self.max_line_bytes} bytes"
                    self._partial.clear()
                return
            if self._partial:
                self._partial += chunk[start:end]
                self._line(bytes(self._partial))
                self._partial.clear()
            else:
                self._line(chunk[start:end])
            if self._fatal is not None:
                return
            start = end + 1

    def finish(self) -> None:
        if self._fatal is None and self._partial:
            self._line(bytes(self._partial))
            self._partial.clear()

    def _line(self, line: bytes) -> None:
        self._number += 1
        if len(line) > self.max_line_bytes:
            self._fatal = f"line {self._number}: longer than {self.max_line_bytes} bytes"
            return
        if not line.strip():
            return
        self.lines += 1
        if self.lines > self.max_lines:
            self._fatal = f"more than {self.max_lines} lines"
            return
        if len(self.errors) >= self.MAX_REPORTED:
            return
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            self.errors.append((self._number, f"not valid JSON ({exc})"))
            return
        if not isinstance(value, dict):
            self.errors.append((self._number, f"not a JSON object (a {type(value).__name__})"))

    @property
    def done_badly(self) -> bool:
        return self._fatal is not None

    def problem(self) -> ApiError | None:
        """The refusal, naming the lines, or None when the file is good JSONL."""
        parts = [f"line {n}: {why}" for n, why in self.errors]
        if self._fatal is not None:
            parts.append(self._fatal)
        if not parts and self.lines == 0:
            parts.append("the file has no lines")
        if not parts:
            return None
        return ApiError(
            "invalid_request_error",
            "The file is not valid JSONL for the Batch API (each line one JSON object): " + "; ".join(parts),
            param="file",
            code="invalid_file_format",
        )
