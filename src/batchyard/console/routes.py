"""The web console: static pages under ``/console`` and the few live views the public API
does not offer (progress while a batch runs, result lines as they are written).

The pages call the ``/v1`` API for everything else, with the same key; ``/console/api``
sits behind the same gate (key, workspace, rate limit), without ``anthropic-version``.

An admin key opens ``/console/api`` too, read-only, for any workspace it names with
``workspace_id`` (archived ones included: their keys stop working, their batches stay
readable here)."""

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
from ..protocol import admin as admin_wire
from ..protocol import openai_batches as openai_wire
from ..protocol import webhooks as hooks_wire
from ..protocol.errors import ApiError, invalid_request
from ..protocol.timestamps import now_us, to_rfc3339
from ..store.batches import BatchRecord
from ..store.schema import DeliveryState

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


ADMIN_WORKSPACES = 1000


def _admin(request: Request) -> bool:
    return "admin_key_id" in request.scope["state"]


async def _workspace(request: Request) -> tuple[str, str]:
    """The workspace a view reads (id, name): the key's own, or for an admin key the one
    named by ``workspace_id`` (which must exist; archived is fine)."""
    state = request.scope["state"]
    if not _admin(request):
        return state["workspace_id"], state.get("workspace_name") or state["workspace_id"]
    workspace_id = admin_wire.plain_id(request.query_params.get("workspace_id"), "workspace_id", in_path=False)
    if workspace_id is None:
        raise invalid_request("workspace_id: an admin key names the workspace to read (?workspace_id=wrkspc_…)")
    record = await services(request).keys.store.workspace(workspace_id)
    if record is None:
        raise admin_wire.workspace_not_found(workspace_id)
    return record.id, record.name


async def info(request: Request) -> Response:
    svc = services(request)
    shown: dict[str, Any] = {
        "version": __version__,
        "keys_required": await svc.keys.keys_required(),
        "workspace": request.scope["state"].get("workspace_name"),
        "admin": _admin(request),
    }
    if _admin(request):
        records, _ = await svc.keys.store.page_workspaces(
            ADMIN_WORKSPACES, None, None, include_archived=True, ids=None
        )
        shown["workspaces"] = [
            {"id": r.id, "name": r.name, "archived": r.archived_at is not None} for r in records
        ]
    return json_response(shown)


OPENAI_ENDED = ("completed", "failed", "expired", "cancelled")


def batch_view(record: BatchRecord, by_state: dict[str, int], *, actions: bool = True) -> dict[str, Any]:
    """What the console shows of a batch of either Batch API, in one shape: its status in
    its own API's words, counts by result type (live while it runs), what can be done
    (nothing through ``/v1`` for an admin key, which reads only: ``actions`` false)."""
    if record.processing_status == "ended":
        by_state = {"succeeded": record.succeeded, "errored": record.errored, "canceled": record.canceled,
                    "expired": record.expired}
    counts = {t: by_state.get(t, 0) for t in RESULT_TYPES}
    downloads: list[dict[str, str]] = []
    if record.api == "openai":
        shown = openai_wire.batch_object(record, by_state)
        status = shown["status"]
        ended = status in OPENAI_ENDED
        for key, button, label, suffix in (
            ("output_file_id", "download-output", "Download output", "output"),
            ("error_file_id", "download-errors", "Download errors", "error"),
        ):
            if shown[key]:
                downloads.append({"id": button, "label": label, "path": f"/v1/files/{shown[key]}/content",
                                  "filename": f"{record.id}_{suffix}.jsonl"})
        cancel: str | None = f"/v1/batches/{record.id}/cancel"
        errors = (shown["errors"] or {}).get("data") or []
    else:
        status = record.processing_status
        ended = status == "ended"
        if ended and record.archived_at is None:
            downloads.append({"id": "download-results", "label": "Download results",
                              "path": f"/v1/messages/batches/{record.id}/results", "filename": f"{record.id}_results.jsonl"})
        cancel = f"/v1/messages/batches/{record.id}/cancel"
        errors = []
    if not actions:
        downloads, cancel = [], None
    return {
        "id": record.id,
        "api": record.api,
        "endpoint": record.endpoint,
        "status": status,
        "ended": ended,
        "created_at": to_rfc3339(record.created_at),
        "ended_at": to_rfc3339(record.finalized_at if record.api == "openai" else record.ended_at),
        "total": record.request_count,
        "counts": counts,
        "cancel_path": cancel if cancel and record.processing_status == "in_progress" else None,
        "delete_path": f"/v1/messages/batches/{record.id}" if actions and record.api == "anthropic" and ended else None,
        "downloads": downloads,
        "errors": errors,
    }


async def list_batches(request: Request) -> Response:
    """Batches of both APIs, newest first, with live counts for the open ones."""
    svc = services(request)
    query = request.query_params
    limit = _int(query.get("limit"), "limit", 20, 1, 100)
    workspace_id, _ = await _workspace(request)
    records, has_more = await svc.batches.list_both(
        workspace_id, limit, query.get("after_id") or None, query.get("before_id") or None
    )
    live = await svc.batches.live_counts([r.id for r in records if r.processing_status != "ended"])
    data = [batch_view(r, live.get(r.id, {}), actions=not _admin(request)) for r in records]
    return json_response(
        {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


async def progress(request: Request) -> Response:
    svc = services(request)
    workspace_id, _ = await _workspace(request)
    record, counts = await svc.batches.progress(workspace_id, request.path_params["batch_id"])
    finished = sum(n for kind, n in counts.items() if kind in RESULT_TYPES)
    return json_response(
        {
            "batch": batch_view(record, counts, actions=not _admin(request)),
            "total": record.request_count,
            "finished": finished if record.archived_at is None else record.request_count,
            "by_state": counts,
        }
    )


def summary(result: dict[str, Any]) -> str:
    """What a person wants to see of a result at a glance."""
    if result.get("type") == "succeeded":
        answer = result.get("message", {})
        if "choices" in answer:  # an OpenAI batch's chat or text completion
            choice = (answer["choices"] or [{}])[0]
            text = choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content")
            return (text or "")[:SUMMARY_CHARS]
        if answer.get("object") == "list":  # embeddings
            return f"{len(answer.get('data') or [])} embedding(s)"
        for block in answer.get("content", []):
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
    workspace_id, _ = await _workspace(request)
    found = await svc.batches.finished_lines(workspace_id, request.path_params["batch_id"], result_type, after, limit)
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


async def usage(request: Request) -> Response:
    """The caller's workspace's tokens per UTC day for the last ``days`` days, batch and
    standard, and by model and tier (the console's usage page; the Admin API's reports
    cover every workspace)."""
    svc = services(request)
    days = _int(request.query_params.get("days"), "days", 14, 1, 90)
    workspace_id, workspace_name = await _workspace(request)
    day_us = 86_400_000_000
    now = now_us()
    today = now - now % day_us
    start, end = today - (days - 1) * day_us, today + day_us
    rows = await svc.batches.store.usage.buckets(
        start, end, day_us, ["model", "service_tier"], {"workspace_id": [workspace_id]}
    )
    per_day = {start + i * day_us: {"batch": 0, "standard": 0} for i in range(days)}
    by_model: dict[tuple[str, str], dict[str, Any]] = {}
    for bucket, model, tier, requests, uncached, cache_write, cache_read, output in rows:
        tokens = int(uncached) + int(cache_write) + int(cache_read) + int(output)
        per_day[int(bucket)]["batch" if tier == "batch" else "standard"] += tokens
        entry = by_model.setdefault(
            (model, tier), {"model": model, "service_tier": tier, "input_tokens": 0, "output_tokens": 0, "requests": 0}
        )
        entry["input_tokens"] += int(uncached) + int(cache_write) + int(cache_read)
        entry["output_tokens"] += int(output)
        entry["requests"] += int(requests)
    return json_response(
        {
            "workspace": workspace_name,
            "days": [{"date": (to_rfc3339(day) or "")[:10], **counts} for day, counts in sorted(per_day.items())],
            "by_model": sorted(by_model.values(), key=lambda e: (e["model"], e["service_tier"])),
        }
    )


def _delivery(state: int) -> str:
    """A delivery's state by name; "gone" when its row was dropped (its endpoint deleted)."""
    return DeliveryState(state).name.lower() if state in DeliveryState._value2member_map_ else "gone"


async def webhooks(request: Request) -> Response:
    """Webhook endpoints and the latest delivery attempts with their outcomes (admin keys:
    endpoints belong to the organization)."""
    if not _admin(request):
        raise ApiError("permission_error", "Webhooks are the organization's: open the console with an admin key")
    store = services(request).batches.store.webhooks
    limit = _int(request.query_params.get("limit"), "limit", 50, 1, 500)
    endpoints = await store.endpoints()
    attempts = await store.recent_attempts(limit)
    counts = await store.delivery_counts()
    return json_response(
        {
            "endpoints": [
                {k: v for k, v in hooks_wire.endpoint(e).items() if k != "type"} for e in endpoints
            ],
            "deliveries": {_delivery(state): n for state, n in counts.items()},
            "attempts": [
                {
                    "event_id": a.event_id,
                    "event_type": a.event_type,
                    "batch_id": a.subject,
                    "endpoint_id": a.endpoint_id,
                    "url": a.url,
                    "attempt": a.attempt,
                    "at": to_rfc3339(a.at),
                    "duration_ms": round(a.duration_us / 1000, 1),
                    "status_code": a.status_code,
                    "error": a.error,
                    "delivery": _delivery(a.delivery_state),
                }
                for a in attempts
            ],
        }
    )


routes = [
    Route("/console", to_index, methods=["GET"]),
    Route("/console/api/webhooks", webhooks, methods=["GET"]),
    Route("/console/", index, methods=["GET"]),
    Route("/console/api/info", info, methods=["GET"]),
    Route("/console/api/batches", list_batches, methods=["GET"]),
    Route("/console/api/usage", usage, methods=["GET"]),
    Route("/console/api/batches/{batch_id}/progress", progress, methods=["GET"]),
    Route("/console/api/batches/{batch_id}/lines", lines, methods=["GET"]),
    Mount("/console/static", app=ranges_checked(StaticFiles(directory=STATIC)), name="console-static"),
]
