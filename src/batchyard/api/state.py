"""What the routes reach: the process's :class:`~batchyard.services.Services`, kept on the app."""

from __future__ import annotations

from starlette.requests import Request

from ..services import Services


def services(request: Request) -> Services:
    return request.app.state.services
