"""Routes of the Models API: the configured routes with a fixed name, as ModelInfo."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..protocol.errors import invalid_request, not_found
from .batches import parse_limit
from .responses import json_response, page_response
from .state import services
from .surfaces import Surface, surface_of


def listed_models(request: Request) -> list[dict[str, Any]]:
    return services(request).router.listed_models()


async def list_models(request: Request) -> Response:
    query = request.query_params
    limit = parse_limit(query.get("limit"))
    models = listed_models(request)
    lifecycles = query.getlist("lifecycle") + query.getlist("lifecycle[]")
    if lifecycles:
        models = [m for m in models if m["lifecycle"] in lifecycles]
    ids = [m["id"] for m in models]
    after, before = query.get("after_id") or None, query.get("before_id") or None
    start, stop = 0, len(models)
    for name, cursor in (("after_id", after), ("before_id", before)):
        if cursor is not None and cursor not in ids:
            raise invalid_request(f"{name}: no model with id {cursor[:256]!r}")
    if after is not None:
        start = ids.index(after) + 1
    if before is not None:
        stop = ids.index(before)
    window = models[start:stop]
    page = window[-limit:] if before is not None and after is None else window[:limit]
    if surface_of(request.scope) is Surface.OPENAI:  # the openai SDK's client.models.list()
        return json_response({"object": "list", "data": [openai_model(m) for m in models]})
    return page_response(page, len(window) > limit)


def openai_model(info: dict[str, Any]) -> dict[str, Any]:
    """A ModelInfo as OpenAI's Model object (``GET /v1/models`` with no anthropic-version)."""
    created = datetime.fromisoformat(info["created_at"].replace("Z", "+00:00"))
    return {"id": info["id"], "object": "model", "created": int(created.timestamp()), "owned_by": "batchyard"}


async def retrieve_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    info = services(request).router.model(model_id)
    if info is None:
        shown = model_id if len(model_id) <= 256 else model_id[:256] + "..."
        raise not_found(f"model: {shown}")
    if surface_of(request.scope) is Surface.OPENAI:
        return json_response(openai_model(info))
    return json_response(info)


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
]
