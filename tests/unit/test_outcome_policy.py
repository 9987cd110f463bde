"""The lifecycle's outcome policy, alone: what a report becomes, and what a lost lease does."""

from __future__ import annotations

import orjson

from batchyard.backends.base import BackendError
from batchyard.outcomes import OutcomePolicy, Report, backoff_delay
from batchyard.protocol.errors import ApiError
from batchyard.protocol.timestamps import now_us
from batchyard.store.batches import ClaimedRequest, LostLease
from batchyard.store.schema import RequestState

POLICY = OutcomePolicy(retry_base=0.01, retry_cap=0.05, max_lease_losses=3)


def claimed(attempts: int, expires_in: float = 3600) -> ClaimedRequest:
    return ClaimedRequest("msgbatch_x", 7, "c", b"{}", attempts, "2023-06-01", now_us() + int(expires_in * 1e6))


def failed(attempts: int, exc: BackendError, *, max_attempts: int = 3, expires_in: float = 3600):
    return POLICY.decide(Report.failed(claimed(attempts, expires_in), exc, max_attempts, "r"), now_us()).outcome


def test_backoff_grows_and_is_capped_and_honours_retry_after() -> None:
    for attempt in range(1, 12):
        delay = backoff_delay(attempt, None, base=1.0, cap=60.0)
        ceiling = min(60.0, 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert backoff_delay(1, 30.0, base=1.0, cap=60.0) >= 30.0


def test_retryable_errors_are_retried_until_the_limit() -> None:
    retry = failed(1, BackendError(529, "Overloaded", error_type="overloaded_error"))
    assert retry.state == RequestState.PENDING and retry.result is None
    assert 5_000 <= retry.retry_delay_us <= 10_000  # half to all of retry_base
    assert (retry.batch_id, retry.idx, retry.attempts) == ("msgbatch_x", 7, 1)  # fenced by the attempt run
    final = failed(3, BackendError(529, "Overloaded", error_type="overloaded_error"))
    assert final.state == RequestState.ERRORED
    assert orjson.loads(final.result)["error"]["error"] == {"type": "overloaded_error", "message": "Overloaded"}


def test_retry_after_stretches_the_delay() -> None:
    retry = failed(1, BackendError(429, "Rate limited", retry_after=2.5))
    assert retry.state == RequestState.PENDING and retry.retry_delay_us >= 2_500_000


def test_non_retryable_errors_error_at_once() -> None:
    assert failed(1, BackendError(400, "bad", error_type="invalid_request_error")).state == RequestState.ERRORED
    assert failed(1, BackendError(404, "no such model")).state == RequestState.ERRORED


def test_no_retry_past_expiry() -> None:
    outcome = failed(1, BackendError(429, "Rate limited", retry_after=120), expires_in=60)
    assert outcome.state == RequestState.ERRORED and b'"rate_limit_error"' in outcome.result


def test_answered_refused_and_canceled() -> None:
    message = {"id": "msg_1", "type": "message", "content": []}
    ok = POLICY.decide(Report.answered(claimed(1), message), now_us()).outcome
    assert ok.state == RequestState.SUCCEEDED and orjson.loads(ok.result) == {"type": "succeeded", "message": message}
    # A refusal by validation is final even when its status would be retryable elsewhere.
    refused = POLICY.decide(Report.refused(claimed(1), ApiError("api_error", "Internal server error")), now_us())
    assert refused.outcome.state == RequestState.ERRORED and not refused.retry
    canceled = POLICY.decide(Report.canceled(claimed(2)), now_us()).outcome
    assert canceled.state == RequestState.CANCELED and canceled.result is None and canceled.attempts == 2


def test_a_lost_lease_requeues_until_the_line_is_poison() -> None:
    for losses in (1, 2):
        back = POLICY.after_lost_lease(LostLease("msgbatch_x", 3, losses, losses))
        assert back.state == RequestState.PENDING and back.result is None
    poison = POLICY.after_lost_lease(LostLease("msgbatch_x", 3, 3, 3))
    assert poison.state == RequestState.ERRORED
    error = orjson.loads(poison.result)["error"]["error"]
    assert error["type"] == "api_error"
    assert "lost 3 times" in error["message"] and "will not be tried again" in error["message"]
    assert OutcomePolicy(max_lease_losses=5).after_lost_lease(LostLease("b", 0, 4, 4)).state == RequestState.PENDING
