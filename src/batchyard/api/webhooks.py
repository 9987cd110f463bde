"""Routes of webhook endpoints in the Admin API (``/v1/organizations/webhooks``, the SDK's
``client.beta.organization.webhooks``): create (its ``whsec_`` signing secret answered once),
list, retrieve, update, delete, regenerate the secret. Admin keys only (``api/auth.py``), and,
as in Anthropic's API, only with ``anthropic-beta: webhooks-2026-10-07``: without it the
routes answer 404 as if they did not exist.

batchyard's additions: its batch events in ``enabled_events``, a ``workspace_id`` to hear of
one workspace's batches only, and endpoints declared in the config file (``source:
"config"``), which are listed here but changed only there."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..protocol import admin as admin_wire
from ..protocol import webhooks as wire
from ..protocol.errors import invalid_request, not_found
from ..protocol.ids import new_webhook_endpoint_id
from ..protocol.timestamps import now_us
from ..store.webhooks import EndpointRecord, WebhookStore
from .admin import json_object
from .responses import json_response
from .state import services

UPDATABLE = {"description", "enabled_events", "name", "state", "url", "workspace_id"}
CREATABLE = {"description", "enabled_events", "name", "url", "workspace_id"}


def _store(request: Request) -> WebhookStore:
    return services(request).batches.store.webhooks


def _beta(request: Request) -> None:
    betas = {b.strip() for b in request.headers.get("anthropic-beta", "").split(",")}
    if wire.BETA not in betas:
        raise not_found(f"Not found. (Webhook endpoints need the header anthropic-beta: {wire.BETA}.)")


async def _endpoint(request: Request) -> EndpointRecord:
    _beta(request)
    endpoint_id = request.path_params["endpoint_id"]
    found = admin_wire.plain_id(endpoint_id, "webhook_endpoint_id", in_path=True, missing=wire.endpoint_not_found)
    assert found is not None
    record = await _store(request).endpoint(found)
    if record is None:
        raise wire.endpoint_not_found(found)
    return record


async def _workspace(request: Request, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_request("workspace_id: Input should be a valid string or null")
    found = admin_wire.plain_id(value, "workspace_id", in_path=False)
    record = await services(request).keys.store.workspace(found or "")
    if record is None:
        raise invalid_request(f"workspace_id: no workspace {value[:128]!r}")
    return record.id


def _unknown(body: dict[str, Any], allowed: set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise invalid_request(f"{key[:128]}: Extra inputs are not permitted")


async def create_endpoint(request: Request) -> Response:
    _beta(request)
    body = await json_object(request)
    _unknown(body, CREATABLE)
    store = _store(request)
    url = wire.check_url(body.get("url"))
    events = wire.check_events(body.get("enabled_events"), required=True)
    assert events is not None
    if await store.count_endpoints("api") >= wire.MAX_ENDPOINTS:
        raise invalid_request(f"An organization can have at most {wire.MAX_ENDPOINTS} webhook endpoints")
    now = now_us()
    secret = wire.new_secret()
    record = EndpointRecord.enabled(
        new_webhook_endpoint_id(now // 1000),
        url,
        wire.check_text(body.get("name"), "name", wire.MAX_NAME) or "",
        wire.check_text(body.get("description"), "description", wire.MAX_DESCRIPTION) or "",
        wire.events_column(events),
        await _workspace(request, body.get("workspace_id")),
        secret,
        "api",
        now,
    )
    await store.create_endpoint(record)
    return json_response(wire.endpoint(record, secret=secret))


async def list_endpoints(request: Request) -> Response:
    _beta(request)
    query = request.query_params
    raw = query.get("limit") or "0"
    try:
        limit = int(raw)
    except ValueError:
        raise invalid_request("limit: Input should be a valid integer") from None
    if not 0 <= limit <= 100:
        raise invalid_request("limit: Input should be between 0 and 100")
    limit = limit or 20
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise invalid_request("order: Input should be 'asc' or 'desc'")
    records = await _store(request).endpoints()  # newest first; at most a few dozen
    if order == "asc":
        records.reverse()
    ids = [r.id for r in records]
    start, end = 0, len(records)
    after, before = query.get("after_id"), query.get("before_id")
    if after:
        start = ids.index(after) + 1 if after in ids else len(ids)
    if before:
        end = ids.index(before) if before in ids else 0  # the first ``limit`` before it, as the SDK says
    window = records[start:end]
    page = window[:limit]
    return json_response(admin_wire.page([wire.endpoint(r) for r in page], len(window) > limit))


async def retrieve_endpoint(request: Request) -> Response:
    return json_response(wire.endpoint(await _endpoint(request)))


def _declared(record: EndpointRecord) -> None:
    if record.source == "config":
        raise invalid_request(
            f"Webhook endpoint {record.id} is declared in the server's config file: change it there"
        )


async def update_endpoint(request: Request) -> Response:
    record = await _endpoint(request)
    _declared(record)
    body = await json_object(request)
    _unknown(body, UPDATABLE)
    values: dict[str, Any] = {}
    if body.get("url") is not None:
        values["url"] = wire.check_url(body["url"])
    events = wire.check_events(body.get("enabled_events"), required=False)
    if events is not None:
        values["events"] = wire.events_column(events)
    for key, limit in (("name", wire.MAX_NAME), ("description", wire.MAX_DESCRIPTION)):
        text = wire.check_text(body.get(key), key, limit)
        if text is not None:
            values[key] = text
    if "state" in body and body["state"] is not None:
        if body["state"] not in ("enabled", "disabled"):
            raise invalid_request("state: Input should be 'disabled' or 'enabled'")
        values["state"] = body["state"]
        values["disabled_reason"] = ""
    if "workspace_id" in body:
        values["workspace_id"] = await _workspace(request, body["workspace_id"])
    if values:
        values["updated_at"] = now_us()
        updated = await _store(request).update_endpoint(record.id, values)
        record = updated or record
    return json_response(wire.endpoint(record))


async def delete_endpoint(request: Request) -> Response:
    record = await _endpoint(request)
    _declared(record)
    if not await _store(request).delete_endpoint(record.id):
        raise wire.endpoint_not_found(record.id)
    return json_response({"id": record.id, "type": "webhook_endpoint_deleted"})


async def regenerate_secret(request: Request) -> Response:
    record = await _endpoint(request)
    _declared(record)
    secret = wire.new_secret()
    await _store(request).update_endpoint(record.id, {"secret": secret, "updated_at": now_us()})
    return json_response({"signing_secret": secret})


routes = [
    Route("/v1/organizations/webhooks", create_endpoint, methods=["POST"]),
    Route("/v1/organizations/webhooks", list_endpoints, methods=["GET"]),
    Route("/v1/organizations/webhooks/{endpoint_id}", retrieve_endpoint, methods=["GET"]),
    Route("/v1/organizations/webhooks/{endpoint_id}", update_endpoint, methods=["POST"]),
    Route("/v1/organizations/webhooks/{endpoint_id}", delete_endpoint, methods=["DELETE"]),
    Route("/v1/organizations/webhooks/{endpoint_id}/regenerate_signing_secret", regenerate_secret, methods=["POST"]),
]
