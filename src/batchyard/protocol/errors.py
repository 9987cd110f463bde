"""Anthropic error types, their HTTP statuses, and the error envelope."""

from __future__ import annotations

from typing import Any

# error.type -> HTTP status, as in the API's error table.
STATUS_BY_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

TYPE_BY_STATUS: dict[int, str] = {status: kind for kind, status in STATUS_BY_TYPE.items()}


MAX_MESSAGE = 1024  # characters of an error message; past that it is cut, with "..."
MAX_ECHO = 128  # characters of a client's value (a key, a name) quoted in a message


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """Text that may quote what a client sent, cut to a size fit for an error message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_type_for_status(status: int) -> str:
    """The error type the API uses for an HTTP status (other 4xx are invalid requests)."""
    if status in TYPE_BY_STATUS:
        return TYPE_BY_STATUS[status]
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


def should_retry(status: int) -> bool:
    """What the API's ``x-should-retry`` header says for a status by default."""
    return status in (408, 409, 429) or status >= 500


class ApiError(Exception):
    """An error that becomes an Anthropic error envelope on the wire."""

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        retryable: bool | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        message = bounded(message)
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        # OpenAI's envelope also names the offending parameter and a machine code.
        self.param = param
        self.code = code
        self.status = status if status is not None else STATUS_BY_TYPE.get(error_type, 400)
        self.headers = dict(headers or {})
        self.retryable = should_retry(self.status) if retryable is None else retryable

    def envelope(self, request_id: str | None) -> dict[str, Any]:
        return error_envelope(self.error_type, self.message, request_id)

    def openai_envelope(self) -> dict[str, Any]:
        return openai_error_envelope(self.error_type, self.message, self.param, self.code)

    def __repr__(self) -> str:
        return f"ApiError({self.error_type!r}, {self.message!r}, status={self.status})"


def error_envelope(error_type: str, message: str, request_id: str | None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}


def openai_error_envelope(error_type: str, message: str, param: str | None, code: str | None) -> dict[str, Any]:
    """OpenAI's error shape, used by the OpenAI-compatible surfaces (the same error types
    as Anthropic's, as Anthropic's own compatibility layer sends them)."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def invalid_request(message: str) -> ApiError:
    return ApiError("invalid_request_error", message)


def not_found(message: str) -> ApiError:
    return ApiError("not_found_error", message)
