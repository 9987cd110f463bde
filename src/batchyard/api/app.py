"""The ASGI application factory: wiring of store, lifecycle, backends, engine and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from ..config import Settings
from ..console import routes as console_routes
from ..metrics import Metrics
from ..protocol.errors import MAX_ECHO, ApiError, bounded
from ..services import open_services
from ..store.database import SoleEngineLock
from ..store.ratelimits import RateStore
from . import admin as admin_routes
from . import batches as batch_routes
from . import complete as complete_routes
from . import files as file_routes
from . import messages as message_routes
from . import models as model_routes
from . import observability
from . import openai_batches as openai_batch_routes
from . import openai_chat as chat_routes
from . import webhooks as webhook_routes
from .auth import Auth
from .middleware import ApiMiddleware
from .ratelimit import SharedRequestLimiter
from .responses import error_response

log = logging.getLogger("batchyard.api")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc, request)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes for this path (one path may have a route per method)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and isinstance(route, Route) and route.methods:
            methods |= route.methods
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = ApiError("not_found_error", "Not found")
    elif exc.status_code == 405:
        error = ApiError(
            "invalid_request_error",
            f"Method {request.method} is not allowed for {bounded(request.url.path, MAX_ECHO)}",
            status=405,
            headers={"allow": ", ".join(_allowed_methods(request))},
        )
    else:
        error = ApiError("invalid_request_error", str(exc.detail), status=exc.status_code)
    return error_response(error, request)


def create_app(
    settings: Settings, *, run_engine: bool = True, access_log: bool = False, engine_lock: SoleEngineLock | None = None
) -> Starlette:
    metrics = Metrics()
    auth = Auth(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc = await open_services(settings, run_engine=run_engine, metrics=metrics, engine_lock=engine_lock)
        app.state.services = svc
        auth.ring = svc.keys
        if svc.db.is_postgres or settings.shared_rate_limits:  # processes may be many: one bucket per key
            auth.shared = SharedRequestLimiter(RateStore(svc.db), auth.limiter)
        log.info("serving", extra={"database": svc.db.url.redacted(), "engine": run_engine})
        if not await svc.keys.keys_required():
            log.warning(
                "OPEN MODE: no API keys exist, so any caller with any key is let in. "
                "Create one with `batchyard keys create --workspace NAME` (or serve --require-keys)."
            )
        try:
            yield
        finally:
            await svc.close()

    return Starlette(
        routes=[
            *batch_routes.routes,
            *message_routes.routes,
            *file_routes.routes,
            *chat_routes.routes,
            *openai_batch_routes.routes,
            *complete_routes.routes,
            *model_routes.routes,
            *admin_routes.routes,
            *webhook_routes.routes,
            *observability.routes,
            *console_routes.routes,
        ],
        middleware=[
            Middleware(
                ApiMiddleware,
                gate=auth,
                metrics=metrics,
                access_log=access_log,
                direct={
                    ("POST", "/v1/messages"): message_routes.create_message,
                    ("POST", "/v1/chat/completions"): chat_routes.create_chat_completion,
                },
            )
        ],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
