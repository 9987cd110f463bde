"""Routes of the Models API: the configured routes with a fixed name, as ModelInfo."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..protocol.errors import invalid_request, not_found
from ..protocol.models import model_info
from .batches import parse_limit
from .responses import json_response, page_response
from .state import services


def listed_models(request: Request) -> list[dict[str, Any]]:
    """Named routes (patterns and "*" are not models), newest release first."""
    router = services(request).router
    infos = []
    seen: set[str] = set()
    for index, backend in router.backends.items():
        route = backend.route
        if route.is_pattern or route.id in seen:
            continue
        seen.add(route.id)
        infos.append(
            (
                index,
                model_info(
                    route.id,
                    display_name=route.display_name,
                    created_at=route.created_at,
                    max_input_tokens=route.max_input_tokens,
                    max_tokens=route.max_tokens,
                    caps=backend.capabilities(),
                ),
            )
        )
    infos.sort(key=lambda pair: (pair[1]["created_at"], -pair[0]), reverse=True)
    return [info for _, info in infos]


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
    return page_response(page, len(window) > limit)


async def retrieve_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    for info in listed_models(request):
        if info["id"] == model_id:
            return json_response(info)
    shown = model_id if len(model_id) <= 256 else model_id[:256] + "..."
    raise not_found(f"model: {shown}")


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
]
