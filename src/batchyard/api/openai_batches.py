"""Routes of OpenAI's Batch API (``/v1/batches``): each reads the request, calls one
lifecycle method (:class:`batchyard.openai_batches.OpenAIBatches`) and shapes the answer.
Errors come in OpenAI's envelope (``/v1/batches`` is an OpenAI-only path)."""

from __future__ import annotations

import hashlib

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..idempotency import HEADER as idempotency_header
from ..idempotency import idempotency_key
from ..openai_batches import OpenAIBatches
from ..protocol import openai_batches as wire
from ..protocol.errors import ApiError
from ..protocol.files import openai_page  # (OpenAI's one list shape)
from ..protocol.timestamps import now_us
from .bodies import parse_json, read_body
from .responses import json_response
from .state import services

CREATE_BODY_BYTES = 64 * 1024  # ids, an endpoint and at most 16 metadata pairs


def _lifecycle(request: Request) -> OpenAIBatches:
    openai = services(request).batches.openai
    if openai is None:  # (every server has a file store; a bare test harness may not)
        raise ApiError("api_error", "The Batch API needs the file store", status=500)
    return openai


def _workspace(request: Request) -> str:
    return request.scope["state"]["workspace_id"]


async def create_batch(request: Request) -> Response:
    svc = services(request)
    raw = await read_body(request, CREATE_BODY_BYTES, svc.settings.limits.body_timeout)
    body = parse_json(raw)
    queue_limit = None
    if "key_id" in request.scope["state"]:  # keyed callers have a cap on queued requests
        state = request.scope["state"]
        _, queue_limit = svc.keys.limits_for(state["workspace_id"], state["workspace_name"], svc.settings.rate_limits)
    openai = _lifecycle(request)
    raw_key = request.headers.get(idempotency_header)
    idempotency = None
    if raw_key is not None:
        idempotency = idempotency_key(raw_key, _workspace(request), "openai", hashlib.sha256(raw).hexdigest(), now_us())
    record = await openai.create(
        _workspace(request),
        body,
        queue_limit=queue_limit or None,
        key_id=request.scope["state"].get("key_id"),
        idempotency=idempotency,
    )
    return json_response((await openai.views([record]))[0])


async def retrieve_batch(request: Request) -> Response:
    openai = _lifecycle(request)
    record = await openai.get(_workspace(request), request.path_params["batch_id"])
    return json_response((await openai.views([record]))[0])


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    try:
        limit = int(raw)
    except ValueError:
        raise wire.bad_param("limit", f"Invalid 'limit': {raw[:64]!r} is not an integer.", "invalid_type") from None
    if not 1 <= limit <= 100:
        raise wire.bad_param("limit", f"Invalid 'limit': {limit} is not between 1 and 100.")
    return limit


async def list_batches(request: Request) -> Response:
    openai = _lifecycle(request)
    query = request.query_params
    records, has_more = await openai.list(_workspace(request), _limit(query.get("limit")), query.get("after") or None)
    return json_response(openai_page(await openai.views(records), has_more))


async def cancel_batch(request: Request) -> Response:
    openai = _lifecycle(request)
    record = await openai.cancel(_workspace(request), request.path_params["batch_id"])
    return json_response((await openai.views([record]))[0])


routes = [
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", retrieve_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
]
