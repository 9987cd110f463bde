"""Wire shapes of the Message Batches API: ``MessageBatch``, deletions and result lines."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from .errors import error_envelope
from .timestamps import to_rfc3339


class BatchLike(Protocol):
    id: str
    processing_status: str
    request_count: int
    succeeded: int
    errored: int
    canceled: int
    expired: int
    created_at: int
    expires_at: int
    ended_at: int | None
    cancel_initiated_at: int | None
    archived_at: int | None


def request_counts(batch: BatchLike) -> dict[str, int]:
    """Everything counts as processing until the batch ends (the documented rule)."""
    if batch.processing_status != "ended":
        return {"processing": batch.request_count, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    return {
        "processing": 0,
        "succeeded": batch.succeeded,
        "errored": batch.errored,
        "canceled": batch.canceled,
        "expired": batch.expired,
    }


def message_batch(batch: BatchLike, results_url: str | None) -> dict[str, Any]:
    """All ten keys, in the real service's order, nullable ones present as null."""
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": batch.processing_status,
        "request_counts": request_counts(batch),
        "ended_at": to_rfc3339(batch.ended_at),
        "created_at": to_rfc3339(batch.created_at),
        "expires_at": to_rfc3339(batch.expires_at),
        "archived_at": to_rfc3339(batch.archived_at),
        "cancel_initiated_at": to_rfc3339(batch.cancel_initiated_at),
        "results_url": results_url if batch.processing_status == "ended" else None,
    }


def deleted_batch(batch_id: str) -> dict[str, Any]:
    return {"id": batch_id, "type": "message_batch_deleted"}


def succeeded_result(message: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": "succeeded", "message": message})


def errored_result(error_type: str, message: str) -> bytes:
    return orjson.dumps({"type": "errored", "error": error_envelope(error_type, message, None)})


_BARE_RESULTS = {
    "canceled": b'{"type":"canceled"}',
    "expired": b'{"type":"expired"}',
}


def result_line(custom_id: str, result_type: str, result: bytes | None) -> bytes:
    """One JSONL line (with its newline) of the results file."""
    body = result if result is not None else _BARE_RESULTS[result_type]
    return b'{"custom_id":' + orjson.dumps(custom_id) + b',"result":' + body + b"}\n"


def content_disposition(batch_id: str) -> str:
    # Batch ids are checked against their pattern before they get here, so they hold
    # only [A-Za-z0-9_]; nothing a client sent can reach this header.
    return f"attachment; filename*=utf-8''{batch_id}_results.jsonl"
