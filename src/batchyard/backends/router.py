"""Model name -> route -> backend instance. One backend instance per route, shared by the
engine and interactive calls."""

from __future__ import annotations

from collections.abc import Sequence

from ..protocol.messages import ModelResolver
from ..routes import Route, route_for
from .base import Backend
from .registry import BACKENDS


class Router(ModelResolver):
    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = list(routes)
        self.backends: dict[int, Backend] = {route.index: BACKENDS[route.backend](route) for route in self._routes}
        self._started: list[Backend] = []

    @property
    def routes(self) -> list[Route]:
        return self._routes

    def route_for(self, model: str) -> Route | None:
        return route_for(self._routes, model)

    def backend_for(self, model: str) -> Backend | None:
        route = self.route_for(model)
        return None if route is None else self.backends[route.index]

    # ModelResolver, for the validator
    def knows(self, model: str) -> bool:
        return "\x00" not in model and self.route_for(model) is not None

    def max_tokens(self, model: str) -> int | None:
        route = self.route_for(model)
        return None if route is None else route.max_tokens

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
