"""What becomes of a request the engine ran: the lifecycle's policy, and nobody else's.

The engine runs a claimed request and hands back a :class:`Report` of what happened
(the backend answered, failed, the request was refused by validation, or the batch was
canceled under it). :class:`OutcomePolicy` turns that into the request's next state:
succeeded, errored, canceled, or pending again after a backoff (bounded by the route's
attempts and by the batch's expiry). Lease recovery asks the same policy what becomes of
a request whose worker was lost while running it: back to the queue, or, after
``max_lease_losses`` such losses, errored as a poison line.

A request that lost its worker ``isolate_after`` times is a suspect: engines run suspects
one at a time, so a poison line keeps crashing alone and its neighbours finish.

Pure: no I/O, no clock of its own (callers pass ``now``). Only :mod:`batchyard.batches`
calls it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from .protocol import batches as wire
from .protocol.errors import ApiError
from .protocol.timestamps import seconds_to_us
from .protocol.usage import Tokens
from .store.batches import ClaimedRequest, FinishedRequest, LostLease
from .store.schema import RequestState
from .store.usage import UsageKey, minute_of

ReportKind = Literal["answered", "failed", "refused", "canceled"]


@dataclass(frozen=True, slots=True)
class Report:
    """What happened when the engine ran one claimed request. No decision in it."""

    request: ClaimedRequest
    kind: ReportKind
    message: dict[str, Any] | None = None  # answered: the Message
    error: ApiError | None = None  # failed (the backend's error) or refused (validation)
    max_attempts: int = 1  # how many tries the request's route allows
    route_id: str | None = None  # the route that failed (for the retry metric)
    tokens: Tokens | None = None  # answered: what the backend used

    @classmethod
    def answered(cls, request: ClaimedRequest, message: dict[str, Any], tokens: Tokens | None = None) -> Report:
        return cls(request, "answered", message=message, tokens=tokens)

    @classmethod
    def failed(cls, request: ClaimedRequest, error: ApiError, max_attempts: int, route_id: str) -> Report:
        return cls(request, "failed", error=error, max_attempts=max_attempts, route_id=route_id)

    @classmethod
    def refused(cls, request: ClaimedRequest, error: ApiError) -> Report:
        return cls(request, "refused", error=error)

    @classmethod
    def canceled(cls, request: ClaimedRequest) -> Report:
        return cls(request, "canceled")


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: FinishedRequest

    @property
    def retry(self) -> bool:
        return self.outcome.state == RequestState.PENDING


def backoff_delay(attempt: int, retry_after: float | None, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with jitter (half fixed, half random), never shorter than the
    backend asked for."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def lease_lost_message(losses: int) -> str:
    return (
        f"This request's worker was lost {losses} times while running it (it crashed or stopped responding); "
        "it will not be tried again."
    )


@dataclass(frozen=True, slots=True)
class OutcomePolicy:
    retry_base: float = 1.0  # seconds before the first retry, doubling per attempt
    retry_cap: float = 60.0  # the longest delay between attempts
    max_lease_losses: int = 3  # lost leases before a request is a poison line
    isolate_after: int = 2  # lost leases after which a request runs alone (one suspect at a time)

    def decide(self, report: Report, now: int) -> Decision:
        request = report.request
        if report.kind == "answered":
            assert report.message is not None
            decision = _ends(request, RequestState.SUCCEEDED, wire.succeeded_result(report.message))
            if report.tokens is not None:  # counted once, with the result (batch lines: the batch tier)
                model = (request.model or "")[:256]  # (the usage table's width; validated names fit)
                key = UsageKey(minute_of(now), request.workspace_id, request.key_id or "", model, "batch")
                decision.outcome.usage = (key, report.tokens)
            return decision
        if report.kind == "canceled":
            return _ends(request, RequestState.CANCELED, None)
        error = report.error
        assert error is not None
        if report.kind == "failed" and error.retryable and request.attempts < report.max_attempts:
            delay = backoff_delay(request.attempts, _retry_after(error), self.retry_base, self.retry_cap)
            delay_us = seconds_to_us(delay)
            if now + delay_us < request.expires_at:
                return Decision(
                    FinishedRequest(
                        request.batch_id, request.idx, request.attempts, RequestState.PENDING, None, delay_us
                    )
                )
        return _ends(request, RequestState.ERRORED, wire.errored_result(error.error_type, error.message))

    def after_lost_lease(self, lost: LostLease) -> FinishedRequest:
        """A request whose worker was lost: claimable again, or a poison line that ends."""
        if lost.lease_losses >= self.max_lease_losses:
            result = wire.errored_result("api_error", lease_lost_message(lost.lease_losses))
            return FinishedRequest(lost.batch_id, lost.idx, lost.attempts, RequestState.ERRORED, result)
        return FinishedRequest(lost.batch_id, lost.idx, lost.attempts, RequestState.PENDING, None)


def _ends(request: ClaimedRequest, state: RequestState, result: bytes | None) -> Decision:
    return Decision(FinishedRequest(request.batch_id, request.idx, request.attempts, state, result))


def _retry_after(error: ApiError) -> float | None:
    value = getattr(error, "retry_after", None)
    return value if isinstance(value, (int, float)) else None
