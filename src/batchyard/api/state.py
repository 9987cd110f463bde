"""What the routes reach: the process's :class:`~batchyard.services.Services`, kept on the app."""

from __future__ import annotations

from starlette.requests import Request

from ..services import Services
from ..usage import Account


def services(request: Request) -> Services:
    return request.app.state.services


def account_of(request: Request) -> Account:
    """Whose call this is, for its usage: the key's workspace and the key."""
    state = request.scope["state"]
    return Account(state.get("workspace_id", ""), state.get("key_id") or "")
