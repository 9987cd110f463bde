"""The engine: claims ready requests, runs them on their backends, reports what happened.

One engine per process (inside ``serve``, or as ``worker``). It is an executor: it asks
the lifecycle for leased work in chunks, keeps at most ``concurrency`` attempts in hand
(:class:`InFlight`), runs each and hands a :class:`Report` of what the backend said to the
:class:`OutcomeWriter`; the lifecycle decides what each report means. Beside it run the
:class:`Heartbeat` (leases), the :class:`CancelWatcher` (canceled and expired batches stop
their calls in flight) and the periodic sweep. An attempt whose outcome was never written
is released on a clean shutdown, or recovered by lease expiry after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..backends.base import BackendError, GenerateRequest
from ..backends.router import Router
from ..batches import Batches, ClaimBudget, Settled
from ..config import EngineSettings
from ..files import Files, may_reference_files
from ..metrics import Metrics, count_tokens
from ..outcomes import Report
from ..protocol.errors import ApiError, invalid_request
from ..protocol.jsonscan import JsonSyntaxError, loads_document
from ..protocol.messages import MessageCreateRequest, ValidatedRequest, validate_message_request
from ..protocol.openai_batches import LineCall, prepare_line
from ..protocol.usage import Tokens, tokens_of
from ..store.batches import Attempt, ClaimedRequest
from ..store.database import is_database_outage
from ..store.notify import Notifier
from ..store.schema import RequestState
from .cancels import CancelWatcher
from .heartbeat import Heartbeat
from .inflight import InFlight, Running
from .limits import RouteLimiter, measured_create
from .upkeep import guarded, poll
from .writer import OutcomeWriter

log = logging.getLogger("batchyard.engine")

PREPARE_SLICE = 256  # claimed requests parsed and checked per trip to a thread
START_SLICE = 128  # requests started per turn of the event loop


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"



@dataclass(slots=True)
class Prepared:
    """A claimed request with its params parsed and validated (or the reason they are not)."""

    request: ClaimedRequest
    validated: ValidatedRequest | None
    refusal: ApiError | None
    call: LineCall | None = None  # a line of an OpenAI batch: how it runs and what it answers


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
        self.inflight = InFlight()
        self.writer = OutcomeWriter(batches, self.owner, self._settled)
        self.heartbeat = Heartbeat(batches, self.owner, self.inflight, max(0.05, settings.lease / 3), self._lost)
        self.cancels = CancelWatcher(batches, self.inflight, self._closed, self._spawn_upkeep)
        self._wake = asyncio.Event()
        self._stopping = False
        self._drained = False
        self._loops: list[asyncio.Task[None]] = []
        self._upkeep: set[asyncio.Task[None]] = set()
        self._next_due: float | None = None  # loop time when a retry this engine scheduled comes due
        self._news = True  # a notice (or a retry coming due) since the last claim: read which batches have work
        self._instant = {index for index, backend in router.backends.items() if backend.instant()}
        self.completed = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, *, sole_engine: bool = False) -> None:
        """Start the engine's loops. ``sole_engine``: no other engine can exist on this
        database (the caller holds the lock that says so), so whatever is still running
        was left by a run that died."""
        if sole_engine:
            await self.batches.recover_on_start()
        self._notices = self.notifier.subscribe()
        stopping = lambda: self._stopping  # noqa: E731
        loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("dispatch", self._dispatch_loop),
            ("write", self.writer.run),
            ("heartbeat", self.heartbeat.run),
            ("cancels", self.cancels.run),
            ("notices", lambda: self.cancels.listen(self._notices, self._there_may_be_work)),
            ("sweep", poll(self.batches.sweep, self.settings.sweep_interval)),
        ]
        self._loops = [asyncio.create_task(guarded(name, loop, stopping), name=f"engine-{name}") for name, loop in loops]
        log.info("engine started", extra={"owner": self.owner, "concurrency": self.settings.concurrency})

    async def stop(self) -> None:
        """Stop claiming, let running requests finish for a grace period, write what
        finished, and hand the rest back to the queue untouched."""
        self._stopping = True
        self._wake.set()
        busy = self.inflight.tasks()
        if busy:
            await asyncio.wait(busy, timeout=self.settings.shutdown_grace)
        for running in self.inflight:
            running.stop("shutdown")
        leftover_tasks = self.inflight.tasks()
        if leftover_tasks:
            await asyncio.wait(leftover_tasks, timeout=5)
        for task in [*self._loops, *self._upkeep]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._upkeep, return_exceptions=True)
        await self.writer.flush(final=True)
        leftover = self.inflight.attempts()
        if leftover:
            with contextlib.suppress(Exception):
                await self.batches.release(self.owner, leftover)
            log.info("released unfinished requests", extra={"requests": len(leftover)})
        for attempt in leftover:
            self.inflight.drop(attempt)
        self.notifier.unsubscribe(self._notices)
        log.info("engine stopped", extra={"owner": self.owner, "completed": self.completed})

    def _there_may_be_work(self) -> None:
        self._drained = False
        self._news = True
        self._wake.set()

    def _spawn_upkeep(self, work: Awaitable[None]) -> None:
        async def guarded_once() -> None:
            try:
                await work
            except Exception:
                log.exception("upkeep failed; the sweeper will retry it")

        task = asyncio.create_task(guarded_once())
        self._upkeep.add(task)
        task.add_done_callback(self._upkeep.discard)

    # -- claiming --------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if self._next_due is not None and self._next_due <= loop.time():
                self._next_due = None  # claiming now picks it up
                self._news = True
            budget = self._budget()
            if self._worth_claiming(budget):
                want = budget.want
                claimed = await self.batches.claim_ready(self.owner, budget, fresh=self._news)
                self._news = False
                # Nothing ready anywhere: wait for a notice or the poll. Otherwise what is
                # left waits for room on its routes, which finished requests make.
                self._drained = claimed is None
                if claimed:
                    self._start(claimed)
                    if len(claimed) == want:
                        await asyncio.sleep(0)
                        continue
            self._wake.clear()
            timeout = self.settings.poll_interval
            if self._next_due is not None:
                timeout = max(0.001, min(timeout, self._next_due - loop.time()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _route_of(self, model: str | None) -> int | None:
        route = self.router.route_for(model) if isinstance(model, str) else None  # (the router caches)
        return None if route is None else route.index

    def _budget(self) -> ClaimBudget:
        """What this engine can take now: its own room; for each route with a bound, its
        slots plus as many again queued to start the moment a slot frees (so the route
        never waits for a claim round), less the attempts held for it; one suspect at a
        time. Holding no more than that, a crash charges its lost leases to requests that
        were running or next in line, not to hundreds waiting in this process."""
        room = {
            index: max(0, 2 * limiter.limit - self.inflight.on_route(index))
            for index, limiter in self.limiters.items()
            if limiter.limit is not None
        }
        want = min(self.settings.concurrency - len(self.inflight), self.settings.claim_chunk)
        unbounded = any(limiter.limit is None for limiter in self.limiters.values())
        return ClaimBudget(
            max(0, want), room, self._route_of, suspects=0 if self.inflight.suspects else 1, any_unbounded=unbounded
        )

    def _worth_claiming(self, budget: ClaimBudget) -> bool:
        """Claim in chunks (fewer, larger transactions) unless the engine is idle."""
        if budget.want <= 0:
            return False
        if not len(self.inflight):
            return True
        if any(limiter.limit is None for limiter in self.limiters.values()):
            if budget.want >= min(self.settings.claim_chunk, max(1, self.settings.concurrency // 4)):
                return True
        return any(
            free >= max(1, (self.limiters[index].limit or 1) // 2) for index, free in budget.room.items()
        )

    def _start(self, claimed: list[ClaimedRequest]) -> None:
        """Hold the claimed attempts (renewed from now on) and start them once their params
        are parsed and checked, on a thread (CPU work, off the event loop); meanwhile the
        dispatcher goes on claiming."""
        isolate_after = self.batches.policy.isolate_after
        entries = [
            self.inflight.add(request, self._route_of(request.model), request.lease_losses >= isolate_after)
            for request in claimed
        ]

        async def prepare_and_run() -> None:
            # In slices, so the first requests run while the next are still being checked.
            for start in range(0, len(claimed), PREPARE_SLICE):
                part = claimed[start : start + PREPARE_SLICE]
                prepared = await asyncio.to_thread(self._prepare, part)
                pairs = list(zip(entries[start : start + PREPARE_SLICE], prepared, strict=True))
                for first in range(0, len(pairs), START_SLICE):
                    for running, ready in pairs[first : first + START_SLICE]:
                        if running.request.attempt not in self.inflight:
                            continue  # lost meanwhile
                        if running.route in self._instant and (ready.call is None or ready.call.passthrough is None):
                            # A backend that never waits: run here, no task of its own (a
                            # cancel or a lost lease finds it done). Only a full route or a
                            # file_id source to read makes it wait, and the lines after it with it.
                            await self._run(running, ready)
                        else:
                            running.task = asyncio.create_task(self._run(running, ready))
                    # Tasks started together run back to back before the loop looks at its
                    # sockets again: started a few dozen at a time, none waits long.
                    await asyncio.sleep(0)

        self._spawn_upkeep(prepare_and_run())

    def _prepare(self, claimed: Sequence[ClaimedRequest]) -> list[Prepared]:
        return [self._prepare_one(request) for request in claimed]

    def _prepare_one(self, request: ClaimedRequest) -> Prepared:
        try:
            if request.endpoint is not None:
                call = prepare_line(request.params, request.endpoint, self.router, loads_document)
                return Prepared(request, call.validated, None, call)
            body = loads_document(request.params)
            validated = validate_message_request(body, request.api_version, self.router, in_batch=True)
        except JsonSyntaxError as exc:
            return Prepared(request, None, invalid_request(f"The request params are not valid JSON: {exc}"))
        except ApiError as exc:
            return Prepared(request, None, exc)
        except Exception:
            log.exception("validating a request failed unexpectedly", extra={"batch_id": request.batch_id})
            return Prepared(request, None, ApiError("api_error", "Internal server error"))
        return Prepared(request, validated, None)

    # -- running ---------------------------------------------------------------------

    async def _run(self, running: Running, prepared: Prepared) -> None:
        request = running.request
        try:
            report = await self._execute(prepared)
        except asyncio.CancelledError:
            if running.stop_reason == "canceled":
                report = Report.canceled(request)
            elif running.stop_reason == "lost":
                return  # someone else owns the request now; nothing of ours to write
            else:
                raise  # shutdown: the attempt stays held, to be released
        except Exception:
            log.exception("request failed unexpectedly", extra={"batch_id": request.batch_id, "idx": request.idx})
            report = Report.refused(request, ApiError("api_error", "Internal server error"))
        self.writer.add(report)

    async def _execute(self, prepared: Prepared) -> Report:
        request = prepared.request
        if self.cancels.is_canceling(request.batch_id):
            return Report.canceled(request)
        if prepared.refusal is not None:
            return Report.refused(request, prepared.refusal)
        call = prepared.call
        if call is not None and call.passthrough is not None:
            return await self._pass_through(request, call)
        validated = prepared.validated
        assert validated is not None
        route = self.router.route_for(validated.model.model)
        assert route is not None  # the validator checked the model
        backend = self.router.backends[route.index]
        limiter = self.limiters[route.index]
        if self.files is not None and may_reference_files(request.params):  # they resolve when the line runs
            try:
                validated = await self.files.resolve(validated, request.workspace_id, backend)
            except ApiError as exc:
                return Report.refused(request, exc)
            except Exception as exc:
                if not is_database_outage(exc):
                    raise
                unavailable = ApiError("api_error", "The file store is unavailable", status=503)
                return Report.failed(request, unavailable, route.max_attempts, route.id)
        model = validated.model
        assert isinstance(model, MessageCreateRequest)
        async with limiter.slot(interactive=False, group=request.batch_id):
            if self.cancels.is_canceling(request.batch_id):
                return Report.canceled(request)
            try:
                message = await measured_create(
                    backend,
                    GenerateRequest(model, validated.body, request.api_version, service_tier="batch"),
                    limiter,
                    self.metrics,
                    kind="batch",
                )
            except BackendError as exc:
                return Report.failed(request, exc, route.max_attempts, route.id)
        return Report.answered(request, message if call is None else call.shape(message), tokens_of(message))

    async def _pass_through(self, request: ClaimedRequest, call: LineCall) -> Report:
        """A line for an endpoint the Messages model has no form for (embeddings, legacy
        completions): its body goes to the route's upstream as it is, where the backend can."""
        route = self.router.route_for(call.model)
        assert route is not None and call.passthrough is not None and request.endpoint is not None
        backend = self.router.backends[route.index]
        serve = getattr(backend, "pass_through", None)
        if serve is None:
            return Report.refused(
                request,
                ApiError(
                    "invalid_request_error",
                    f"The model '{call.model}' is served by the {backend.name} backend, which cannot serve "
                    f"{request.endpoint}: route it to an OpenAI-compatible server (backend \"openai\").",
                ),
            )
        limiter = self.limiters[route.index]
        async with limiter.slot(interactive=False, group=request.batch_id):
            if self.cancels.is_canceling(request.batch_id):
                return Report.canceled(request)
            try:
                answer = await serve(request.endpoint, call.passthrough)
            except BackendError as exc:
                return Report.failed(request, exc, route.max_attempts, route.id)
        return Report.answered(request, answer, tokens_of(answer))

    # -- outcomes --------------------------------------------------------------------

    def _settled(self, reports: Sequence[Report], settled: Settled) -> None:
        """The writer wrote a round: those attempts are done; stale ones were not ours."""
        loop = asyncio.get_running_loop()
        routes: dict[Attempt, str | None] | None = None
        # Counted per round, once per kind: results by type, tokens by workspace and model.
        results: dict[RequestState, int] = {}
        tokens: dict[tuple[str, str, str], Tokens] = {}
        drop = self.inflight.drop
        for decision in settled.written:
            outcome = decision.outcome
            drop(outcome.attempt)
            if decision.retry:
                if routes is None:
                    routes = {r.request.attempt: r.route_id for r in reports}
                self.metrics.retries.inc(route=routes.get(outcome.attempt) or "")
                due = loop.time() + outcome.retry_delay_us / 1e6
                self._next_due = due if self._next_due is None else min(self._next_due, due)
                self._wake.set()
            else:
                results[outcome.state] = results.get(outcome.state, 0) + 1
                if outcome.usage is not None:
                    used, spent = outcome.usage
                    group = (used.workspace_id, self.router.metric_model(used.model), used.service_tier)
                    tokens[group] = tokens[group] + spent if group in tokens else spent
        for state, count in results.items():
            self.metrics.results.inc(count, type=state.result_type)
        for (workspace_id, model, tier), spent in tokens.items():
            count_tokens(self.metrics, workspace_id, model, tier, spent)
        stale = [a for a in settled.stale if a in self.inflight]
        for attempt in stale:
            self.inflight.drop(attempt)
        if stale:
            self.metrics.stale_outcomes.inc(len(stale), source="finish")
            log.warning("outcomes of requests whose lease was lost were not written", extra={"requests": len(stale)})
        self.completed += len(settled.written)
        openai_ended = {r.request.batch_id for r in reports if r.request.endpoint is not None} & set(settled.ended)
        if openai_ended and not self._stopping:  # (when stopping, the next sweep writes them)
            self._spawn_upkeep(self.batches.finalize(sorted(openai_ended)))
        if not self._drained:
            self._wake.set()

    def _lost(self, attempts: Sequence[Attempt], source: str) -> None:
        """Attempts that no longer hold their lease: stop their calls, let them go."""
        dropped = 0
        for attempt in attempts:
            running = self.inflight.drop(attempt)
            if running is not None:
                running.stop("lost")
                dropped += 1
        if dropped:
            self.metrics.stale_outcomes.inc(dropped, source=source)
            log.warning("requests lost their lease; their calls were stopped", extra={"requests": dropped, "source": source})
        self._wake.set()

    def _closed(self, batch_ids: set[str]) -> None:
        """Batches that ended (expired) or went away under requests in hand."""
        self._lost([r.request.attempt for r in self.inflight.of_batches(batch_ids)], "closed")


def make_limiters(router: Router) -> dict[int, RouteLimiter]:
    return {index: RouteLimiter(backend.concurrency_limit()) for index, backend in router.backends.items()}
