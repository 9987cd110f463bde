"""Retry policy of the engine: backoff shape, retry-after, attempt limits, expiry."""

from __future__ import annotations

from batchyard.backends.base import BackendError
from batchyard.config import EngineSettings, Route
from batchyard.engine.dispatcher import Engine, backoff_delay
from batchyard.protocol.timestamps import now_us
from batchyard.store.batches import ClaimedRequest
from batchyard.store.schema import RequestState


def test_backoff_grows_and_is_capped_and_honours_retry_after() -> None:
    for attempt in range(1, 12):
        delay = backoff_delay(attempt, None, base=1.0, cap=60.0)
        ceiling = min(60.0, 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert backoff_delay(1, 30.0, base=1.0, cap=60.0) >= 30.0


def engine() -> Engine:
    return Engine.__new__(Engine)


def claimed(attempts: int, expires_in: float) -> ClaimedRequest:
    return ClaimedRequest("msgbatch_x", 0, "c", b"{}", attempts, "2023-06-01", now_us() + int(expires_in * 1e6))


def _after(attempts: int, exc: BackendError, *, max_attempts: int = 3, expires_in: float = 3600) -> object:
    from batchyard.metrics import Metrics

    eng = engine()
    eng.settings = EngineSettings(retry_base=0.01, retry_cap=0.05)
    eng.metrics = Metrics()
    return eng._after_failure(claimed(attempts, expires_in), Route(id="r", backend="simulator", options={}, max_attempts=max_attempts), exc)


def test_retryable_errors_are_retried_until_the_limit() -> None:
    retry = _after(1, BackendError(529, "Overloaded", error_type="overloaded_error"))
    assert retry.state == RequestState.PENDING and retry.next_attempt_at > now_us()
    final = _after(3, BackendError(529, "Overloaded", error_type="overloaded_error"))
    assert final.state == RequestState.ERRORED
    assert b'"overloaded_error"' in final.result and b'"Overloaded"' in final.result


def test_non_retryable_errors_error_at_once() -> None:
    outcome = _after(1, BackendError(400, "bad", error_type="invalid_request_error"))
    assert outcome.state == RequestState.ERRORED
    assert _after(1, BackendError(404, "no such model")).state == RequestState.ERRORED


def test_no_retry_past_expiry() -> None:
    outcome = _after(1, BackendError(429, "Rate limited", retry_after=120), expires_in=60)
    assert outcome.state == RequestState.ERRORED and b'"rate_limit_error"' in outcome.result
