"""Model name -> route -> backend instance. One backend instance per route, shared by the
engine and interactive calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..protocol.catalogue import BY_NAME, CLAUDE_MODELS
from ..protocol.messages import ModelResolver
from ..protocol.models import model_info
from ..routes import Route, route_for
from .base import Backend
from .registry import BACKENDS


class Router(ModelResolver):
    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = list(routes)
        self.backends: dict[int, Backend] = {route.index: BACKENDS[route.backend](route) for route in self._routes}
        self._started: list[Backend] = []
        self._limits: dict[str, int | None] = {}
        self._route_of: dict[str, Route | None] = {}
        self._listed: set[str] | None = None  # the names GET /v1/models shows

    @property
    def routes(self) -> list[Route]:
        return self._routes

    def route_for(self, model: str) -> Route | None:
        """The route of a model name (looked up once per name: routes do not change)."""
        try:
            return self._route_of[model]
        except KeyError:
            pass
        if len(self._route_of) > 10_000:
            self._route_of.clear()
        found = self._route_of[model] = route_for(self._routes, model)
        return found

    def metric_model(self, model: str) -> str:
        """The name a model goes by in metric labels: its own when a route names it or lists
        it, else its route's id (so callers of a pattern route cannot grow a label set
        without bound by making names up)."""
        route = self.route_for(model)
        if route is None:
            return "unknown"
        if not route.is_pattern:
            return model
        if self._listed is None:
            self._listed = {info["id"] for info in self.listed_models()}
        return model if model in self._listed else route.id

    def backend_for(self, model: str) -> Backend | None:
        route = self.route_for(model)
        return None if route is None else self.backends[route.index]

    # -- the model list ----------------------------------------------------------------

    def listed_models(self) -> list[dict[str, Any]]:
        """What ``GET /v1/models`` shows: every route with a fixed name, and the models each
        pattern route lists (its ``models``; by default, for the simulator, the Claude
        catalogue), each once and only where that route is the one that serves it; newest
        release first."""
        infos: dict[str, tuple[int, dict[str, Any]]] = {}
        for route in self._routes:
            for info in self._route_infos(route):
                if info["id"] not in infos and self.route_for(info["id"]) is route:
                    infos[info["id"]] = (route.index, info)
        ordered = sorted(infos.values(), key=lambda pair: (pair[1]["created_at"], -pair[0]), reverse=True)
        return [info for _, info in ordered]

    def _route_infos(self, route: Route) -> list[dict[str, Any]]:
        caps = self.backends[route.index].capabilities()
        if not route.is_pattern:
            return [
                model_info(
                    route.id,
                    display_name=route.display_name,
                    created_at=route.created_at,
                    max_input_tokens=route.max_input_tokens,
                    max_tokens=route.max_tokens,
                    caps=caps,
                )
            ]
        if route.models is not None:
            return [
                model_info(
                    m.id,
                    display_name=m.display_name,
                    created_at=m.created_at,
                    max_input_tokens=m.max_input_tokens or route.max_input_tokens,
                    max_tokens=m.max_tokens or route.max_tokens,
                    caps=caps,
                )
                for m in route.models
            ]
        if route.backend == "simulator":
            return [m.info() for m in CLAUDE_MODELS if route.matches(m.id)]
        return []

    def model(self, name: str) -> dict[str, Any] | None:
        """``GET /v1/models/{name}``: a listed model (an alias answers with the model it
        names), or any other name a route serves, described from that route."""
        listed = {info["id"]: info for info in self.listed_models()}
        if name in listed:
            return listed[name]
        known = BY_NAME.get(name)
        if known is not None and known.id in listed:
            return listed[known.id]
        route = self.route_for(name)
        if route is None or "\x00" in name:
            return None
        return model_info(
            name,
            display_name=None,
            created_at=None,
            max_input_tokens=route.max_input_tokens,
            max_tokens=route.max_tokens,
            caps=self.backends[route.index].capabilities(),
        )

    # ModelResolver, for the validator
    def knows(self, model: str) -> bool:
        return "\x00" not in model and self.route_for(model) is not None

    def max_tokens(self, model: str) -> int | None:
        """The route's bound, else what the model list says of this model (the catalogue's
        limits hold on the simulator as on the real API)."""
        route = self.route_for(model)
        if route is None:
            return None
        if route.max_tokens is not None or not route.is_pattern:
            return route.max_tokens
        if model not in self._limits:
            if len(self._limits) > 10_000:
                self._limits.clear()
            info = next((i for i in self._route_infos(route) if i["id"] == model), None)
            if info is None and model in BY_NAME:
                info = next((i for i in self._route_infos(route) if i["id"] == BY_NAME[model].id), None)
            self._limits[model] = None if info is None else info["max_tokens"]
        return self._limits[model]

    def preflight(self) -> None:
        for backend in self.backends.values():
            backend.preflight()

    async def start(self) -> None:
        """Start every backend; if one fails, the ones already started are closed again."""
        try:
            for backend in self.backends.values():
                await backend.start()
                self._started.append(backend)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        started, self._started = self._started, []
        for backend in reversed(started):
            await backend.close()
