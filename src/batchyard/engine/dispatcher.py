"""The engine: claims ready requests, runs them on their backends, writes their results.

One engine per process (inside ``serve``, or as ``worker``). It asks the lifecycle for
leased work in chunks, keeps at most ``concurrency`` requests in hand, and writes
outcomes in batched transactions. Leases are renewed by a heartbeat while requests run;
a request whose outcome was never written is released on a clean shutdown, or recovered
by lease expiry after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from ..backends.base import BackendError, GenerateRequest
from ..backends.router import Router
from ..batches import Batches
from ..config import EngineSettings, Route
from ..files import Files
from ..metrics import Metrics
from ..protocol import batches as wire
from ..protocol.errors import ApiError
from ..protocol.jsonscan import JsonSyntaxError, loads_strict
from ..protocol.messages import validate_message_request
from ..protocol.timestamps import now_us, seconds_to_us
from ..store.batches import ClaimedRequest, FinishedRequest
from ..store.database import is_database_outage
from ..store.notify import Notifier
from ..store.schema import RequestState
from .limits import RouteLimiter, measured_create

log = logging.getLogger("batchyard.engine")

WRITE_LINGER = 0.005  # seconds to gather more outcomes into one transaction
WRITE_MAX = 1024
DB_RETRY_DELAY = 0.5
CANCEL_REFRESH = 0.5  # seconds between checks that in-flight batches are still in progress


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def backoff_delay(attempt: int, retry_after: float | None, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with jitter (half fixed, half random), never shorter than the
    backend asked for."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def _parse_params(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except ValueError:
        return loads_strict(raw)  # big integers and the like: the validator words the error


def _outcome(
    request: ClaimedRequest, state: RequestState, result: bytes | None = None, next_attempt_at: int = 0
) -> FinishedRequest:
    """What became of a claimed request, fenced by the attempt it was claimed with."""
    return FinishedRequest(request.batch_id, request.idx, request.attempts, state, result, next_attempt_at)


class Engine:
    def __init__(
        self,
        batches: Batches,
        router: Router,
        settings: EngineSettings,
        notifier: Notifier,
        metrics: Metrics | None = None,
        *,
        limiters: dict[int, RouteLimiter] | None = None,
        owner: str | None = None,
        files: Files | None = None,
    ) -> None:
        self.batches = batches
        self.files = files
        self.router = router
        self.settings = settings
        self.notifier = notifier
        self.metrics = metrics or Metrics()
        self.owner = owner or new_owner_id()
        self.limiters = limiters if limiters is not None else make_limiters(router)
        self.held: dict[tuple[str, int], ClaimedRequest] = {}
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._outcomes: list[FinishedRequest] = []
        self._outcome_ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._drained = False
        self._closed_batches: set[str] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._upkeep: set[asyncio.Task[None]] = set()
        self._next_due: int | None = None
        self.completed = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, *, sole_engine: bool = False) -> None:
        if sole_engine:
            await self.batches.release_all()
        self._notices = self.notifier.subscribe()
        self._loops = [
            asyncio.create_task(self._guarded(self._dispatch_loop), name="engine-dispatch"),
            asyncio.create_task(self._guarded(self._write_loop), name="engine-write"),
            asyncio.create_task(self._guarded(self._heartbeat_loop), name="engine-heartbeat"),
            asyncio.create_task(self._guarded(self._notice_loop), name="engine-notices"),
            asyncio.create_task(self._guarded(self._sweep_loop), name="engine-sweep"),
        ]
        log.info("engine started", extra={"owner": self.owner, "concurrency": self.settings.concurrency})

    async def stop(self) -> None:
        """Stop claiming, let running requests finish for a grace period, write what
        finished, and hand the rest back to the queue untouched."""
        self._stopping = True
        self._wake.set()
        running = list(self._tasks.values())
        if running:
            await asyncio.wait(running, timeout=self.settings.shutdown_grace)
        for task in self._tasks.values():
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=5)
        for loop in [*self._loops, *self._upkeep]:
            loop.cancel()
        await asyncio.gather(*self._loops, *self._upkeep, return_exceptions=True)
        await self._flush(final=True)
        leftover = list(self.held.values())
        if leftover:
            with contextlib.suppress(Exception):
                await self.batches.release(self.owner, leftover)
            log.info("released unfinished requests", extra={"requests": len(leftover)})
        self.held.clear()
        self.notifier.unsubscribe(self._notices)
        log.info("engine stopped", extra={"owner": self.owner})

    async def _guarded(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop forever; a database outage pauses it instead of killing it."""
        while not self._stopping:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_database_outage(exc):
                    log.warning("database unavailable; retrying", extra={"loop": loop.__name__, "error": type(exc).__name__})
                else:
                    log.exception("engine loop failed; retrying", extra={"loop": loop.__name__})
                await asyncio.sleep(DB_RETRY_DELAY)

    # -- claiming --------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            if self._next_due is not None and self._next_due <= now_us():
                self._next_due = None  # claiming now picks it up
            room = self.settings.concurrency - len(self.held)
            if room >= min(self.settings.claim_chunk, max(1, self.settings.concurrency // 4)) or (
                room > 0 and not self.held
            ):
                claimed = await self.batches.claim_ready(self.owner, min(room, self.settings.claim_chunk))
                for request in claimed:
                    self._spawn(request)
                self._drained = len(claimed) < min(room, self.settings.claim_chunk)
                if claimed and not self._drained:
                    await asyncio.sleep(0)
                    continue
            self._wake.clear()
            timeout = self.settings.poll_interval
            if self._next_due is not None:
                # A retry this engine scheduled comes due before the next poll.
                timeout = max(0.001, min(timeout, (self._next_due - now_us()) / 1e6))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _spawn(self, request: ClaimedRequest) -> None:
        key = (request.batch_id, request.idx)
        self.held[key] = request
        self._tasks[key] = asyncio.create_task(self._run(request))

    async def _notice_loop(self) -> None:
        while True:
            notice = await self._notices.get()
            if notice.kind == "canceled":
                self._closed_batches.add(notice.subject)
                self._spawn_upkeep(self.batches.close_canceled(notice.subject))
            elif notice.kind in ("created", "requeued"):  # there may be work
                self._drained = False
                self._wake.set()

    def _spawn_upkeep(self, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("upkeep failed; the sweeper will retry it")

        task = asyncio.create_task(guarded())
        self._upkeep.add(task)
        task.add_done_callback(self._upkeep.discard)

    # -- running ---------------------------------------------------------------------

    async def _run(self, request: ClaimedRequest) -> None:
        key = (request.batch_id, request.idx)
        try:
            outcome = await self._execute(request)
        except asyncio.CancelledError:
            self._tasks.pop(key, None)
            raise
        except Exception:
            log.exception("request failed unexpectedly", extra={"batch_id": request.batch_id, "idx": request.idx})
            outcome = self._errored(request, "api_error", "Internal server error")
        self._tasks.pop(key, None)
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    def _errored(self, request: ClaimedRequest, error_type: str, message: str) -> FinishedRequest:
        return _outcome(request, RequestState.ERRORED, wire.errored_result(error_type, message))

    async def _execute(self, request: ClaimedRequest) -> FinishedRequest:
        if request.batch_id in self._closed_batches:
            return _outcome(request, RequestState.CANCELED)
        try:
            body = _parse_params(request.params)
            validated = validate_message_request(body, request.api_version, self.router, in_batch=True)
            if self.files is not None:  # file_id sources resolve when the line runs
                backend = self.router.backend_for(validated.model.model)
                validated = await self.files.resolve(validated, request.workspace_id, backend)
                body = validated.body
        except JsonSyntaxError as exc:
            return self._errored(request, "invalid_request_error", f"The request params are not valid JSON: {exc}")
        except ApiError as exc:
            return self._errored(request, exc.error_type, exc.message)
        route = self.router.route_for(validated.model.model)
        assert route is not None  # the validator checked the model
        backend = self.router.backends[route.index]
        limiter = self.limiters[route.index]
        async with limiter.slot(interactive=False, group=request.batch_id):
            # A request counts as started once it holds a slot: after a cancel is seen,
            # nothing of that batch gets this far.
            if request.batch_id in self._closed_batches:
                return _outcome(request, RequestState.CANCELED)
            try:
                message = await measured_create(
                    backend,
                    GenerateRequest(validated.model, body, request.api_version, service_tier="batch"),
                    limiter,
                    self.metrics,
                    kind="batch",
                )
            except BackendError as exc:
                return self._after_failure(request, route, exc)
        return _outcome(request, RequestState.SUCCEEDED, wire.succeeded_result(message))

    def _after_failure(self, request: ClaimedRequest, route: Route, exc: BackendError) -> FinishedRequest:
        if exc.retryable and request.attempts < route.max_attempts:
            delay = backoff_delay(request.attempts, exc.retry_after, self.settings.retry_base, self.settings.retry_cap)
            next_at = now_us() + seconds_to_us(delay)
            if next_at < request.expires_at:
                self.metrics.retries.inc(route=route.id)
                return _outcome(request, RequestState.PENDING, next_attempt_at=next_at)
        return self._errored(request, exc.error_type, exc.message)

    # -- writing ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._outcome_ready.wait()
            if len(self._outcomes) < WRITE_MAX:
                await asyncio.sleep(WRITE_LINGER)
            await self._flush()

    async def _flush(self, *, final: bool = False) -> None:
        self._outcome_ready.clear()
        while self._outcomes:
            chunk, self._outcomes = self._outcomes[:WRITE_MAX], self._outcomes[WRITE_MAX:]
            try:
                await self.batches.finish(self.owner, chunk)
            except Exception as exc:
                self._outcomes[:0] = chunk  # keep them; the leases stay ours while we retry
                if final:
                    log.exception("could not write outcomes at shutdown; their leases will expire")
                    return
                if is_database_outage(exc):
                    log.warning("database unavailable; outcomes kept for retry", extra={"outcomes": len(chunk)})
                else:
                    log.exception("writing outcomes failed; retrying")
                await asyncio.sleep(DB_RETRY_DELAY)
                continue
            for outcome in chunk:
                self.held.pop((outcome.batch_id, outcome.idx), None)
                if outcome.state != RequestState.PENDING:
                    self.metrics.results.inc(type=outcome.state.result_type)
            self.completed += len(chunk)
            retries = [o.next_attempt_at for o in chunk if o.state == RequestState.PENDING]
            if retries:
                due = min(retries)
                self._next_due = due if self._next_due is None else min(self._next_due, due)
                self._wake.set()  # so the dispatcher's wait ends no later than the retry
            if not self._drained:
                self._wake.set()

    # -- upkeep ----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        renew_every = max(0.05, self.settings.lease / 3)
        next_renewal = asyncio.get_running_loop().time() + renew_every
        while True:
            await asyncio.sleep(CANCEL_REFRESH)
            in_hand = list(self.held.values())
            batch_ids = {r.batch_id for r in in_hand}
            closed = await self.batches.not_in_progress(batch_ids)
            # Only batches with requests in hand matter: claims never take closed batches.
            current = {r.batch_id for r in self.held.values()}
            self._closed_batches = (self._closed_batches & current) | closed
            now = asyncio.get_running_loop().time()
            if now >= next_renewal:
                next_renewal = now + renew_every
                if in_hand:
                    await self.batches.renew(self.owner, in_hand)

    async def _sweep_loop(self) -> None:
        while True:
            await self.batches.sweep()
            await asyncio.sleep(self.settings.sweep_interval)


def make_limiters(router: Router) -> dict[int, RouteLimiter]:
    return {index: RouteLimiter(backend.route.max_concurrency) for index, backend in router.backends.items()}
