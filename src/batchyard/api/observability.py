"""Liveness, readiness, Prometheus metrics and the OpenAPI document: no credentials needed."""

from __future__ import annotations

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..metrics import gauge_lines
from ..store.schema import DeliveryState
from .openapi import openapi_document
from .responses import json_response
from .state import services


async def health(request: Request) -> Response:
    """The process is up and serving."""
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    """The database answers: safe to send traffic here."""
    try:
        async with services(request).db.read() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return json_response({"status": "unavailable", "database": type(exc).__name__}, status=503)
    return json_response({"status": "ok", "database": "ok"})


async def metrics(request: Request) -> Response:
    svc = services(request)
    lines = svc.metrics.render()
    try:
        figures = await svc.batches.queue_figures()
    except Exception:
        figures = None  # the process's own counters are still worth serving
    if figures is not None:
        lines += gauge_lines(
            "batchyard_batch_requests",
            "Requests of batches not yet archived, by state.",
            {(("state", state),): n for state, n in figures.requests_by_state.items()},
        )
        lines += gauge_lines(
            "batchyard_queue_depth", "Batch requests pending (ready or waiting to retry).", {(): figures.pending}
        )
        lines += gauge_lines(
            "batchyard_batches", "Batches by processing status.", {(("status", k),): v for k, v in figures.batches.items()}
        )
    try:
        deliveries = await svc.batches.store.webhooks.delivery_counts()
    except Exception:
        deliveries = None
    if deliveries is not None:
        lines += gauge_lines(
            "batchyard_webhook_deliveries",
            "Webhook deliveries in the outbox by state (pending: still to be delivered).",
            {(("state", s.name.lower()),): deliveries.get(int(s), 0) for s in DeliveryState},
        )
    if svc.engine is not None:
        lines += gauge_lines("batchyard_engine_in_hand", "Requests this engine holds.", {(): len(svc.engine.inflight)})
    lines += gauge_lines(
        "batchyard_route_in_flight",
        "Backend calls in flight per route.",
        {(("route", svc.router.backends[i].route.id),): lim.active for i, lim in svc.limiters.items()},
    )
    body = "\n".join(lines) + "\n"
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    return json_response(openapi_document())


routes = [
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
