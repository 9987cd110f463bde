"""Model name -> route -> backend instance. One backend instance per route, shared by the
engine and interactive calls."""

from __future__ import annotations

from ..config import Route, Settings
from ..protocol.messages import ModelResolver
from .base import Backend
from .registry import BACKENDS


class Router(ModelResolver):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.backends: dict[int, Backend] = {}
        for index, route in enumerate(settings.routes):
            route.index = index
            self.backends[index] = BACKENDS[route.backend](route)

    @property
    def routes(self) -> list[Route]:
        return self._settings.routes

    def route_for(self, model: str) -> Route | None:
        return self._settings.route_for(model)

    def backend_for(self, model: str) -> Backend | None:
        route = self.route_for(model)
        return None if route is None else self.backends[route.index]

    # ModelResolver, for the validator
    def knows(self, model: str) -> bool:
        return self.route_for(model) is not None

    def max_tokens(self, model: str) -> int | None:
        route = self.route_for(model)
        return None if route is None else route.max_tokens

    def preflight(self) -> None:
        for backend in self.backends.values():
            backend.preflight()

    async def start(self) -> None:
        for backend in self.backends.values():
            await backend.start()

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()
