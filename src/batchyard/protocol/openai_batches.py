"""Wire shapes of OpenAI's Batch API over the one batch lifecycle. Pure: no I/O.

A batch's lines are the engine's requests like any Message Batch's. What differs is at the
edges, and all of it is here:

* the create body (``input_file_id``, ``endpoint``, ``completion_window``, ``metadata``,
  ``output_expires_after``) and the input file's lines ``{custom_id, method, url, body}``,
  checked with OpenAI's wording; a file with bad lines makes a ``failed`` batch whose
  ``errors`` name each line;
* what a line becomes when it runs (:func:`prepare_line`): a Messages request through the
  chat-completions translation or as it is (``/v1/messages``, a batchyard extension), or a
  body passed through to the route's upstream (``/v1/embeddings``, ``/v1/completions``);
* the batch object, with OpenAI's status names and Unix-second timestamps, and counts
  that move while the batch runs;
* the output and error files' lines, made from the results the engine stored (the same
  neutral results Message Batches serve).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .batch_create import BatchLine
from .errors import STATUS_BY_TYPE, ApiError, bounded, invalid_request, openai_error_envelope
from .messages import ModelResolver, ValidatedRequest, validate_message_request
from .versions import V2023_06_01

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages")
PASSTHROUGH_ENDPOINTS = ("/v1/completions", "/v1/embeddings")  # for upstreams that serve them
COMPLETION_WINDOW = "24h"
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_CUSTOM_ID = 512
MAX_REPORTED_ERRORS = 100
MAX_MODEL = 256  # as the Messages API allows
OUTPUT_TTL_RANGE = (3600, 2_592_000)

# What a result stored by the engine starts with when it succeeded (``batches.succeeded_result``).
_SUCCEEDED_PREFIX = b'{"type":"succeeded","message":'


def bad_param(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError("invalid_request_error", message, param=param, code=code)


def missing(param: str) -> ApiError:
    return bad_param(param, f"Missing required parameter: '{param}'.", "missing_required_parameter")


# -- create ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateParams:
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    output_ttl: int | None  # seconds the output and error files are kept (None: the server's default)


def parse_create(body: Any) -> CreateParams:
    """Check a ``POST /v1/batches`` body; raise ApiError (OpenAI's wording, ``param`` set)."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    for name in ("input_file_id", "endpoint", "completion_window"):
        if body.get(name) is None:
            raise missing(name)
    input_file_id, endpoint, window = body["input_file_id"], body["endpoint"], body["completion_window"]
    if not isinstance(input_file_id, str) or not input_file_id or "\x00" in input_file_id:
        raise bad_param("input_file_id", "Invalid 'input_file_id': expected a file id string.", "invalid_type")
    if not isinstance(endpoint, str):
        raise bad_param("endpoint", "Invalid 'endpoint': expected a string.", "invalid_type")
    if endpoint not in ENDPOINTS:
        allowed = ", ".join(f"'{e}'" for e in ENDPOINTS)
        raise bad_param(
            "endpoint",
            f"Invalid value for 'endpoint': {bounded(endpoint, 128)!r} is not supported by this server. "
            f"Supported values are: {allowed}.",
        )
    if window != COMPLETION_WINDOW:
        raise bad_param(
            "completion_window",
            f"Invalid value for 'completion_window': {bounded(str(window), 64)!r}. Supported values are: '24h'.",
        )
    return CreateParams(input_file_id, endpoint, _metadata(body.get("metadata")), _output_ttl(body.get("output_expires_after")))


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_param("metadata", "Invalid type for 'metadata': expected an object.", "invalid_type")
    if len(value) > MAX_METADATA_PAIRS:
        raise bad_param(
            "metadata",
            f"Invalid 'metadata': too many properties. Expected an object with at most {MAX_METADATA_PAIRS} "
            f"properties, but got an object with {len(value)} properties instead.",
            "object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY:
            raise bad_param(
                "metadata",
                f"Invalid 'metadata': keys may be at most {MAX_METADATA_KEY} characters, but "
                f"{bounded(key, 80)!r} has {len(key)}.",
                "string_above_max_length",
            )
        if not isinstance(item, str):
            raise bad_param(
                f"metadata.{key}", f"Invalid type for 'metadata.{key}': expected a string.", "invalid_type"
            )
        if len(item) > MAX_METADATA_VALUE:
            raise bad_param(
                f"metadata.{key}",
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length "
                f"{MAX_METADATA_VALUE}, but got a string with length {len(item)} instead.",
                "string_above_max_length",
            )
    return dict(value)


def _output_ttl(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_param("output_expires_after", "Invalid type for 'output_expires_after': expected an object.", "invalid_type")
    if value.get("anchor") != "created_at":
        raise bad_param(
            "output_expires_after.anchor", "Invalid value for 'output_expires_after.anchor': the only anchor is 'created_at'."
        )
    seconds = value.get("seconds")
    if seconds is None:
        raise missing("output_expires_after.seconds")
    low, high = OUTPUT_TTL_RANGE
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not low <= seconds <= high:
        raise bad_param(
            "output_expires_after.seconds",
            f"Invalid 'output_expires_after.seconds': expected an integer between {low} and {high}.",
        )
    return seconds


# -- the input file -------------------------------------------------------------------


@dataclass
class InputReader:
    """Checks an input file's lines, in order, chunk by chunk (called from a thread): each
    one ``{custom_id, method: "POST", url, body}``, custom ids unique. Lines whose shape is
    right become :class:`BatchLine` (its params: the whole line as uploaded, whose url and
    body the engine reads when it runs); the others become ``errors`` (the batch fails). A line
    whose ``url`` is not the batch's endpoint is not an error here: it is answered with one
    when it runs, as OpenAI does."""

    max_lines: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: int = 0
    count: int = 0
    model: str | None = None  # the first line's model: the batch's ``model``
    _seen: dict[str, int] = field(default_factory=dict)

    def read(self, numbered: list[tuple[int, bytes]]) -> list[BatchLine]:
        good: list[BatchLine] = []
        for number, raw in numbered:
            line = self._line(number, raw)
            if line is not None:
                good.append(line)
        return good if not self.failed else []

    @property
    def failed(self) -> bool:
        return self.bad_lines > 0

    def _error(self, number: int, code: str, message: str, param: str | None = None) -> None:
        self.bad_lines += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"code": code, "line": number, "message": message, "param": param})

    def _line(self, number: int, raw: bytes) -> BatchLine | None:
        raw = raw.strip()
        if not raw:
            return None
        self.count += 1
        if self.count > self.max_lines:
            if self.count == self.max_lines + 1:
                self._error(number, "too_many_requests", f"The input file has more than {self.max_lines} requests.")
            return None
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._error(number, "invalid_json_line", f"Line {number} is not valid JSON: {exc}.")
            return None
        if not isinstance(value, dict):
            self._error(number, "invalid_json_line", f"Line {number} is not a JSON object.")
            return None
        custom_id = value.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            kind = "missing_required_parameter" if custom_id is None else "invalid_value"
            self._error(number, kind, f"Line {number}: 'custom_id' must be a non-empty string.", "custom_id")
            return None
        if "\x00" in custom_id:  # (no database text column takes one)
            self._error(number, "invalid_value", f"Line {number}: 'custom_id' contains a NUL character.", "custom_id")
            return None
        if len(custom_id) > MAX_CUSTOM_ID:
            self._error(
                number, "invalid_value", f"Line {number}: 'custom_id' is longer than {MAX_CUSTOM_ID} characters.", "custom_id"
            )
            return None
        first = self._seen.get(custom_id)
        if first is not None:
            self._error(
                number,
                "duplicate_custom_id",
                f"Line {number}: the custom_id {bounded(custom_id, 64)!r} is also used on line {first}; "
                "each custom_id must be unique within a batch.",
                "custom_id",
            )
            return None
        self._seen[custom_id] = number
        method = value.get("method")
        if method != "POST":
            self._error(
                number,
                "missing_required_parameter" if method is None else "invalid_value",
                f"Line {number}: 'method' must be 'POST'.",
                "method",
            )
            return None
        if not isinstance(value.get("url"), str):
            self._error(number, "missing_required_parameter", f"Line {number}: 'url' must be a string.", "url")
            return None
        body = value.get("body")
        if not isinstance(body, dict):
            self._error(
                number,
                "missing_required_parameter" if body is None else "invalid_value",
                f"Line {number}: 'body' must be a JSON object.",
                "body",
            )
            return None
        model = body.get("model")
        if not isinstance(model, str) or "\x00" in model:
            model = None  # (the line's error, if any, is found when it runs)
        if self.model is None and model is not None:
            self.model = model
        return BatchLine(self.count - 1, custom_id, raw, model)


# -- a line, when it runs ---------------------------------------------------------------


@dataclass(slots=True)
class LineCall:
    """What running one line means: a Messages request (``validated``) whose Message
    ``shape`` makes the line's answer, or a ``passthrough`` body for the route's upstream."""

    model: str
    validated: ValidatedRequest | None = None
    shape: Callable[[dict[str, Any]], dict[str, Any]] = lambda message: message
    passthrough: dict[str, Any] | None = None


def prepare_line(params: bytes, endpoint: str, models: ModelResolver, loads: Callable[[bytes], Any]) -> LineCall:
    """Read a stored line and make it a call; ApiError (the line's error) when it cannot run."""
    from .openai_chat import chat_completion, translate_request  # (the chat layer imports much)

    line = loads(params)
    url, body = line.get("url"), line.get("body")
    if url != endpoint:
        raise bad_param(
            "url",
            f"The line's url {bounded(str(url), 128)!r} is not the batch's endpoint {endpoint!r}: "
            "every line of a batch must target its endpoint.",
        )
    model = body.get("model")
    if not isinstance(model, str):
        raise missing("model") if model is None else bad_param("model", "Invalid type for 'model': expected a string.")
    if not model or len(model) > MAX_MODEL or "\x00" in model:
        raise bad_param("model", f"Invalid 'model': expected a name of 1 to {MAX_MODEL} characters.")
    if endpoint == "/v1/messages":
        return LineCall(model, validate_message_request(body, V2023_06_01, models, in_batch=True))
    if endpoint == "/v1/chat/completions":
        if body.get("stream"):
            raise bad_param("stream", "Invalid value for 'stream': streaming is not supported in a batch.")
        call = translate_request(body, models)
        return LineCall(model, call.validated, lambda message: chat_completion(message, call))
    if not models.knows(model):
        raise ApiError("not_found_error", f"The model '{bounded(model, 128)}' does not exist.", param="model", code="model_not_found")
    return LineCall(model, passthrough=body)


# -- the batch object -------------------------------------------------------------------


def _seconds(us: int | None) -> int | None:
    return None if us is None else us // 1_000_000


def status_of(batch: Any, details: Mapping[str, Any]) -> str:
    if details.get("errors") is not None:
        return "failed"
    if batch.processing_status == "in_progress":
        return "in_progress"
    if batch.processing_status == "canceling":
        return "cancelling"
    if batch.finalized_at is None:  # ended; its files are being written
        return "cancelling" if batch.cancel_initiated_at is not None else "finalizing"
    if batch.cancel_initiated_at is not None:
        return "cancelled"
    if batch.expired:
        return "expired"
    return "completed"


def batch_object(batch: Any, live: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The ``batch`` object, every key of the SDK's ``Batch`` present. ``live``: counts of
    an open batch's requests by result type right now (OpenAI's counts move as it runs)."""
    details = orjson.loads(batch.details) if batch.details else {}
    status = status_of(batch, details)
    failed = status == "failed"
    ended = batch.processing_status == "ended" and not failed
    if failed:
        counts = {"total": 0, "completed": 0, "failed": 0}
    elif ended:
        counts = {
            "total": batch.request_count,
            "completed": batch.succeeded,
            "failed": batch.errored + batch.canceled + batch.expired,
        }
    else:
        live = live or {}
        counts = {
            "total": batch.request_count,
            "completed": live.get("succeeded", 0),
            "failed": live.get("errored", 0) + live.get("canceled", 0) + live.get("expired", 0),
        }
    errors = details.get("errors")
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": details.get("model"),
        "errors": None if errors is None else {"object": "list", "data": errors},
        "input_file_id": batch.input_file_id,
        "completion_window": COMPLETION_WINDOW,
        "status": status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": _seconds(batch.created_at),
        "in_progress_at": None if failed else _seconds(batch.created_at),
        "expires_at": _seconds(batch.expires_at),
        "finalizing_at": _seconds(batch.ended_at) if ended else None,
        "completed_at": _seconds(batch.finalized_at) if status == "completed" else None,
        "failed_at": _seconds(batch.created_at) if failed else None,
        "expired_at": _seconds(batch.finalized_at) if status == "expired" else None,
        "cancelling_at": _seconds(batch.cancel_initiated_at),
        "cancelled_at": _seconds(batch.finalized_at) if status == "cancelled" else None,
        "request_counts": counts,
        "usage": details.get("usage"),
        "metadata": details.get("metadata"),
    }



# -- output and error files -------------------------------------------------------------


def _digest(batch_id: str, idx: int, kind: bytes) -> str:
    # Derived, not random: a file rewritten after a crash names each line the same way.
    return hashlib.blake2b(f"{batch_id}:{idx}".encode(), digest_size=16, person=kind).hexdigest()


def line_id(batch_id: str, idx: int) -> str:
    return "batch_req_" + _digest(batch_id, idx, b"line")


def line_request_id(batch_id: str, idx: int) -> str:
    return "req_" + _digest(batch_id, idx, b"request")


_NOT_RUN = {
    "canceled": {"code": "batch_cancelled", "message": "This request was not executed because the batch was cancelled."},
    "expired": {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    },
}


@dataclass(slots=True)
class Usage:
    """Tokens of a batch's succeeded lines, whatever their endpoint's usage shape."""

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, body: Any) -> None:
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return
        if "input_tokens" in usage:  # a Message
            self.input_tokens += _int(usage.get("input_tokens")) + _int(usage.get("cache_creation_input_tokens"))
            self.input_tokens += _int(usage.get("cache_read_input_tokens"))
            self.cached_tokens += _int(usage.get("cache_read_input_tokens"))
            self.output_tokens += _int(usage.get("output_tokens"))
            return
        self.input_tokens += _int(usage.get("prompt_tokens"))
        self.output_tokens += _int(usage.get("completion_tokens"))
        prompt_details = usage.get("prompt_tokens_details")
        if isinstance(prompt_details, dict):
            self.cached_tokens += _int(prompt_details.get("cached_tokens"))
        completion_details = usage.get("completion_tokens_details")
        if isinstance(completion_details, dict):
            self.reasoning_tokens += _int(completion_details.get("reasoning_tokens"))

    def wire(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def output_line(batch_id: str, idx: int, custom_id: str, result_type: str, result: bytes | None, usage: Usage) -> bytes:
    """One line (with its newline) of the output file (succeeded) or the error file (the
    rest): ``{id, custom_id, response: {status_code, request_id, body} | null, error}``."""
    head = b'{"id":"' + line_id(batch_id, idx).encode() + b'","custom_id":' + orjson.dumps(custom_id)
    if result_type == "succeeded" and result is not None and result.startswith(_SUCCEEDED_PREFIX):
        body = result[len(_SUCCEEDED_PREFIX) : -1]
        usage.add(orjson.loads(body))
        response = b'{"status_code":200,"request_id":"' + line_request_id(batch_id, idx).encode() + b'","body":' + body + b"}"
        return head + b',"response":' + response + b',"error":null}\n'
    if result_type == "errored" and result is not None:
        error = orjson.loads(result).get("error", {}).get("error", {})
        kind = error.get("type") or "api_error"
        status = STATUS_BY_TYPE.get(kind, 500)
        response_object = {
            "status_code": status,
            "request_id": line_request_id(batch_id, idx),
            "body": openai_error_envelope(kind, error.get("message") or "", None, None),
        }
        return head + b',"response":' + orjson.dumps(response_object) + b',"error":null}\n'
    not_run = _NOT_RUN.get(result_type, {"code": "batch_failed", "message": "This request has no result."})
    return head + b',"response":null,"error":' + orjson.dumps(not_run) + b"}\n"
