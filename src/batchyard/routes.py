"""Model routes: which model names go to which backend, with what options.

A route is one ``[[models]]`` table of the config file (or one of the built-in defaults).
Routes are plain values, made once when the settings are loaded and never changed after;
backends read them, the router matches model names against them.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ListedModel:
    """A model a pattern route advertises in ``GET /v1/models`` (its ``models`` list)."""

    id: str
    display_name: str | None = None
    created_at: str | None = None
    max_tokens: int | None = None
    max_input_tokens: int | None = None


@dataclass(frozen=True)
class Prices:
    """USD per million tokens of a route's models."""

    input: float = 0.0
    output: float = 0.0
    cache_write: float = 0.0
    cache_read: float = 0.0


@dataclass(frozen=True)
class Route:
    id: str  # an exact model name, a glob pattern, or "*"
    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    display_name: str | None = None
    created_at: str | None = None
    max_tokens: int | None = None
    max_input_tokens: int | None = None
    max_concurrency: int | None = None  # calls in flight to this route; None: the backend's own bound
    max_attempts: int = 3  # tries of a batch line on retryable backend errors
    index: int = 0  # position in the route list: the key of its backend and limiter
    # For a pattern route: the models it lists (None: the backend's default; the simulator
    # lists the Claude catalogue, others nothing).
    models: tuple[ListedModel, ...] | None = None
    prices: Prices | None = None  # USD per million tokens, for the cost report (None: free)

    @functools.cached_property
    def is_pattern(self) -> bool:
        return any(c in self.id for c in "*?[")

    def matches(self, model: str) -> bool:
        return fnmatch.fnmatchcase(model, self.id) if self.is_pattern else model == self.id


def route_for(routes: Sequence[Route], model: str) -> Route | None:
    """Exact names first, then patterns in order."""
    for route in routes:
        if not route.is_pattern and route.id == model:
            return route
    for route in routes:
        if route.is_pattern and route.matches(model):
            return route
    return None
