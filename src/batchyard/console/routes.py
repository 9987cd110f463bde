"""The web console: static pages under ``/console`` and the few live views the public API
does not offer (progress while a batch runs, result lines as they are written).

The pages call the ``/v1`` API for everything else, with the same key; ``/console/api``
sits behind the same gate (key, workspace, rate limit), without ``anthropic-version``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..api.responses import json_response
from ..api.state import services
from ..protocol import batches as wire
from ..protocol.errors import invalid_request

STATIC = Path(__file__).parent / "static"
RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
SUMMARY_CHARS = 200


_INDEX = (STATIC / "index.html").read_bytes()
_RANGE_SPEC = re.compile(r"^\s*(?:(\d+)-(\d*)|-(\d+))\s*$")


async def index(request: Request) -> Response:
    return Response(_INDEX, media_type="text/html; charset=utf-8", headers={"cache-control": "no-cache"})


def _valid_range(value: str) -> bool:
    unit, _, specs = value.partition("=")
    if unit.strip().lower() != "bytes" or not specs:
        return False
    for spec in specs.split(","):
        match = _RANGE_SPEC.match(spec)
        if match is None:
            return False
        first, last, _ = match.groups()
        if first is not None and last and int(last) < int(first):
            return False
    return True


def ranges_checked(app: ASGIApp) -> ASGIApp:
    """Static files with a Range header that makes no sense (inverted, malformed) are sent
    whole, as HTTP allows, instead of a plain-text 400."""

    async def checked(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers", [])
            kept = [(k, v) for k, v in headers if k.lower() != b"range" or _valid_range(v.decode("latin-1"))]
            if len(kept) != len(headers):
                scope = {**scope, "headers": kept}
        await app(scope, receive, send)

    return checked


async def to_index(request: Request) -> Response:
    return RedirectResponse("/console/")


async def info(request: Request) -> Response:
    svc = services(request)
    return json_response(
        {
            "version": __version__,
            "keys_required": await svc.keys.keys_required(),
            "workspace": request.scope["state"].get("workspace_name"),
        }
    )


async def progress(request: Request) -> Response:
    svc = services(request)
    record, counts = await svc.batches.progress(request.scope["state"]["workspace_id"], request.path_params["batch_id"])
    finished = sum(n for kind, n in counts.items() if kind in RESULT_TYPES)
    return json_response(
        {
            "batch": wire.message_batch(record, None),
            "total": record.request_count,
            "finished": finished if record.archived_at is None else record.request_count,
            "by_state": counts,
        }
    )


def summary(result: dict[str, Any]) -> str:
    """What a person wants to see of a result at a glance."""
    if result.get("type") == "succeeded":
        for block in result.get("message", {}).get("content", []):
            if block.get("type") == "text":
                return block.get("text", "")[:SUMMARY_CHARS]
            if block.get("type") == "tool_use":
                return f"tool_use {block.get('name')} {orjson.dumps(block.get('input')).decode()}"[:SUMMARY_CHARS]
        return ""
    if result.get("type") == "errored":
        error = result.get("error", {}).get("error", {})
        return f"{error.get('type')}: {error.get('message')}"[:SUMMARY_CHARS]
    return ""


def _int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_request(f"{name}: Input should be a valid integer") from None
    if not low <= value <= high:
        raise invalid_request(f"{name}: Input should be between {low} and {high}")
    return value


async def lines(request: Request) -> Response:
    svc = services(request)
    query = request.query_params
    result_type = query.get("type") or None
    if result_type is not None and result_type not in RESULT_TYPES:
        raise invalid_request(f"type: Input should be one of {', '.join(RESULT_TYPES)}")
    after = _int(query.get("after"), "after", -1, -1, 2**31)
    limit = _int(query.get("limit"), "limit", 50, 1, 500)
    full = query.get("full") == "1"
    found = await svc.batches.finished_lines(
        request.scope["state"]["workspace_id"], request.path_params["batch_id"], result_type, after, limit
    )
    data = []
    for position, raw in found:
        line = orjson.loads(raw)
        row: dict[str, Any] = {
            "position": position,
            "custom_id": line["custom_id"],
            "type": line["result"]["type"],
            "summary": summary(line["result"]),
        }
        if full:
            row["line"] = line
        data.append(row)
    return json_response({"data": data, "next_after": found[-1][0] if len(found) == limit else None})


routes = [
    Route("/console", to_index, methods=["GET"]),
    Route("/console/", index, methods=["GET"]),
    Route("/console/api/info", info, methods=["GET"]),
    Route("/console/api/batches/{batch_id}/progress", progress, methods=["GET"]),
    Route("/console/api/batches/{batch_id}/lines", lines, methods=["GET"]),
    Mount("/console/static", app=ranges_checked(StaticFiles(directory=STATIC)), name="console-static"),
]
