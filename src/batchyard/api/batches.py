"""Routes of the Message Batches API: each one reads the request, calls one lifecycle
method, and shapes the answer."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..idempotency import HEADER as idempotency_header
from ..idempotency import body_digest, idempotency_key
from ..protocol import batches as wire
from ..protocol.errors import invalid_request
from ..protocol.timestamps import now_us
from .bodies import spool_body
from .responses import json_response, page_response
from .state import services


def _scope(request: Request) -> tuple[str, str]:
    state = request.scope["state"]
    return state["workspace_id"], state["api_version"]


def public_base_url(request: Request) -> str:
    svc = services(request)
    if svc.settings.public_url:
        return svc.settings.public_url
    host = svc.settings.host
    if host in ("0.0.0.0", "::", ""):
        # Bound to every interface: the address the client used is the one that works.
        return str(request.base_url).rstrip("/")
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{svc.settings.port}"


def batch_body(request: Request, record: Any) -> dict[str, Any]:
    url = services(request).batches.results_url(public_base_url(request), record.id)
    return wire.message_batch(record, url)


async def create_batch(request: Request) -> Response:
    svc = services(request)
    workspace_id, version = _scope(request)
    queue_limit = None
    if "key_id" in request.scope["state"]:  # keyed callers have a cap on queued requests
        state = request.scope["state"]
        _, queue_limit = svc.keys.limits_for(state["workspace_id"], state["workspace_name"], svc.settings.rate_limits)
    body = await spool_body(request, svc.settings.batches.max_bytes, svc.settings.limits.body_timeout)
    with body:
        idempotency = None
        raw_key = request.headers.get(idempotency_header)
        if raw_key is not None:
            digest = await asyncio.to_thread(body_digest, body)
            idempotency = idempotency_key(raw_key, workspace_id, "anthropic", digest, now_us())
        record = await svc.batches.create(
            workspace_id,
            version,
            body,
            queue_limit=queue_limit or None,
            key_id=request.scope["state"].get("key_id"),
            idempotency=idempotency,
        )
    return json_response(batch_body(request, record))


async def retrieve_batch(request: Request) -> Response:
    workspace_id, _ = _scope(request)
    record = await services(request).batches.get(workspace_id, request.path_params["batch_id"])
    return json_response(batch_body(request, record))


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return 20
    try:
        limit = int(raw)
    except ValueError:
        raise invalid_request("limit: Input should be a valid integer, unable to parse string as an integer") from None
    if limit < 1:
        raise invalid_request("limit: Input should be greater than or equal to 1")
    if limit > 1000:
        raise invalid_request("limit: Input should be less than or equal to 1000")
    return limit


async def list_batches(request: Request) -> Response:
    workspace_id, _ = _scope(request)
    query = request.query_params
    limit = parse_limit(query.get("limit"))
    records, has_more = await services(request).batches.list(
        workspace_id, limit, query.get("after_id") or None, query.get("before_id") or None
    )
    return page_response([batch_body(request, r) for r in records], has_more)


async def cancel_batch(request: Request) -> Response:
    workspace_id, _ = _scope(request)
    record = await services(request).batches.cancel(workspace_id, request.path_params["batch_id"])
    return json_response(batch_body(request, record))


async def delete_batch(request: Request) -> Response:
    workspace_id, _ = _scope(request)
    batch_id = request.path_params["batch_id"]
    await services(request).batches.delete(workspace_id, batch_id)
    return json_response(wire.deleted_batch(batch_id))


async def batch_results(request: Request) -> Response:
    workspace_id, _ = _scope(request)
    batch_id = request.path_params["batch_id"]
    pages = await services(request).batches.results(workspace_id, batch_id)
    return StreamingResponse(
        pages,
        media_type="application/x-jsonl",
        headers={"content-disposition": wire.content_disposition(batch_id)},
    )


routes = [
    Route("/v1/messages/batches", create_batch, methods=["POST"]),
    Route("/v1/messages/batches", list_batches, methods=["GET"]),
    Route("/v1/messages/batches/{batch_id}", retrieve_batch, methods=["GET"]),
    Route("/v1/messages/batches/{batch_id}", delete_batch, methods=["DELETE"]),
    Route("/v1/messages/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
    Route("/v1/messages/batches/{batch_id}/results", batch_results, methods=["GET"]),
]
