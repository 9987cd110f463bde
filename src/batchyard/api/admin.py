"""Routes of the Admin API (``/v1/organizations/*``, ``client.organization`` in the SDK):
the organization, workspaces and API keys. Only admin keys reach them (``api/auth.py``).
Users, invites, service accounts, RBAC and spend limits are not here: they answer as
unknown routes do."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..keys import new_workspace_id
from ..protocol import admin as wire
from ..protocol import usage_report
from ..protocol.errors import invalid_request
from ..protocol.timestamps import now_us
from ..store.keys import KeyStore, WorkspaceNameTaken
from ..store.usage import COUNTERS
from .batches import parse_limit
from .bodies import read_json
from .responses import json_response
from .state import services

BODY_BYTES = 64 * 1024


def _workspace_param(request: Request) -> str:
    found = wire.plain_id(request.path_params["workspace_id"], "workspace_id", in_path=True, missing=wire.workspace_not_found)
    assert found is not None
    return found


def _key_param(request: Request) -> str:
    found = wire.plain_id(request.path_params["api_key_id"], "api_key_id", in_path=True, missing=wire.api_key_not_found)
    assert found is not None
    return found


def _cursors(request: Request) -> tuple[str | None, str | None]:
    query = request.query_params
    return (
        wire.plain_id(query.get("after_id"), "after_id", in_path=False),
        wire.plain_id(query.get("before_id"), "before_id", in_path=False),
    )


def _store(request: Request) -> KeyStore:
    return services(request).keys.store


async def json_object(request: Request) -> dict[str, object]:
    svc = services(request)
    body = await read_json(request, BODY_BYTES, svc.settings.limits.body_timeout)
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object")
    return body


async def _reread_keys(request: Request) -> None:
    """Keys changed: this process reads them again before it answers (so the change holds
    from the next request on); other processes hear a notice (PostgreSQL) or read them
    again within seconds (SQLite)."""
    ring = services(request).keys
    ring.forget()
    await ring.refresh()


def _taken(name: str) -> Exception:
    return invalid_request(f"name: a workspace named {name!r} already exists")


async def organization(request: Request) -> Response:
    return json_response(wire.organization("batchyard"))


async def create_workspace(request: Request) -> Response:
    body = await json_object(request)
    if "name" not in body:
        raise invalid_request("name: Field required")
    name = wire.workspace_name(body["name"])
    try:
        record = await _store(request).create_workspace(new_workspace_id(), name, now_us())
    except WorkspaceNameTaken:
        raise _taken(name) from None
    return json_response(wire.workspace(record))


async def list_workspaces(request: Request) -> Response:
    query = request.query_params
    ids = [i for i in (wire.plain_id(v, "ids", in_path=False) for v in query.getlist("ids[]") + query.getlist("ids")) if i]
    if len(ids) > 100:
        raise invalid_request("ids: at most 100 ids")
    after_id, before_id = _cursors(request)
    records, has_more = await _store(request).page_workspaces(
        parse_limit(query.get("limit")),
        after_id,
        before_id,
        include_archived=wire.boolean(query.get("include_archived"), "include_archived"),
        ids=ids or None,
    )
    return json_response(wire.page([wire.workspace(r) for r in records], has_more))


async def retrieve_workspace(request: Request) -> Response:
    workspace_id = _workspace_param(request)
    record = await _store(request).workspace(workspace_id)
    if record is None:
        raise wire.workspace_not_found(workspace_id)
    return json_response(wire.workspace(record))


async def update_workspace(request: Request) -> Response:
    workspace_id = _workspace_param(request)
    body = await json_object(request)
    store = _store(request)
    record = await store.workspace(workspace_id)
    if record is None:
        raise wire.workspace_not_found(workspace_id)
    if "name" in body:
        if record.archived_at is not None:
            raise invalid_request("An archived workspace cannot be changed")
        name = wire.workspace_name(body["name"])
        try:
            record = await store.rename_workspace(workspace_id, name) or record
        except WorkspaceNameTaken:
            raise _taken(name) from None
        await _reread_keys(request)  # keys carry their workspace's name (config limits go by it)
    return json_response(wire.workspace(record))


async def archive_workspace(request: Request) -> Response:
    workspace_id = _workspace_param(request)
    record = await _store(request).archive_workspace(workspace_id, now_us())
    if record is None:
        raise wire.workspace_not_found(workspace_id)
    await _reread_keys(request)
    return json_response(wire.workspace(record))


async def list_api_keys(request: Request) -> Response:
    query = request.query_params
    status = query.get("status") or None
    if status is not None and status not in (*wire.KEY_STATUSES, "expired"):
        raise invalid_request("status: Input should be 'active', 'inactive', 'archived' or 'expired'")
    after_id, before_id = _cursors(request)
    records, has_more = await _store(request).page_keys(
        parse_limit(query.get("limit")),
        after_id,
        before_id,
        workspace_id=wire.plain_id(query.get("workspace_id"), "workspace_id", in_path=False),
        status=status,
    )
    return json_response(wire.page([wire.api_key(r) for r in records], has_more))


async def retrieve_api_key(request: Request) -> Response:
    key_id = _key_param(request)
    record = await _store(request).key(key_id)
    if record is None:
        raise wire.api_key_not_found(key_id)
    return json_response(wire.api_key(record))


async def update_api_key(request: Request) -> Response:
    key_id = _key_param(request)
    name, status = wire.key_update(await json_object(request))
    store = _store(request)
    record = await store.key(key_id)
    if record is None:
        raise wire.api_key_not_found(key_id)
    if record.status == "archived" and (status not in (None, "archived") or name is not None):
        raise invalid_request("An archived API key cannot be changed")
    await store.update_key(key_id, name=name, status=status, now=now_us())
    await _reread_keys(request)
    updated = await store.key(key_id)
    assert updated is not None
    return json_response(wire.api_key(updated))


def _listed(request: Request) -> tuple[str, ...]:
    return tuple(m["id"] for m in services(request).router.listed_models())


def _organization_limits(request: Request) -> dict[str, int]:
    limits = services(request).settings.rate_limits
    return {"requests_per_minute": limits.requests_per_minute, "max_queued_requests": limits.max_queued_requests}


async def _workspace_or_404(request: Request) -> str:
    workspace_id = _workspace_param(request)
    if await _store(request).workspace(workspace_id) is None:
        raise wire.workspace_not_found(workspace_id)
    return workspace_id


async def list_workspace_rate_limits(request: Request) -> Response:
    workspace_id = await _workspace_or_404(request)
    include_inherited = wire.boolean(request.query_params.get("include_inherited"), "include_inherited")
    own = services(request).keys.limits.get(workspace_id, {})
    organization = _organization_limits(request)
    group_type = request.query_params.get("group_type") or None
    entries = []
    for rate_limit_id, (group, limiter) in wire.RATE_LIMIT_GROUPS.items():
        if group_type is not None and group["type"] != group_type:
            continue
        entry = wire.workspace_rate_limit(
            rate_limit_id, workspace_id, own.get(limiter), organization[limiter], include_inherited, _listed(request)
        )
        if entry is not None:
            entries.append(entry)
    return json_response({"data": entries, "next_page": None})


async def update_workspace_rate_limit(request: Request) -> Response:
    workspace_id = await _workspace_or_404(request)
    rate_limit_id = request.path_params["rate_limit_id"]
    limiter, value = wire.rate_limit_update(rate_limit_id, await json_object(request))
    await _store(request).set_limits(workspace_id, {limiter: value}, now_us())
    await _reread_keys(request)
    own = services(request).keys.limits.get(workspace_id, {})
    entry = wire.workspace_rate_limit(
        rate_limit_id, workspace_id, own.get(limiter), _organization_limits(request)[limiter], True, _listed(request)
    )
    return json_response(entry)


async def messages_usage_report(request: Request) -> Response:
    """Tokens by time bucket, grouped and filtered as asked (one read over the buckets)."""
    query = usage_report.parse_query(request.query_params)
    columns = [usage_report.GROUPS[name] for name in query.group_by]
    rows = await services(request).batches.store.usage.buckets(
        query.start, query.page_end, query.width, columns, query.filters
    )
    named = [dict(zip(["bucket", *columns, *COUNTERS], row, strict=True)) for row in rows]
    return json_response(usage_report.report(query, named))


async def cost_report(request: Request) -> Response:
    """Costs by day at the routes' prices (``price_*_per_mtok``), batch lines discounted."""
    svc = services(request)
    query = usage_report.parse_cost_query(request.query_params)
    columns = ["workspace_id", "model", "service_tier"] if "workspace_id" in query.group_by else ["model", "service_tier"]
    rows = await svc.batches.store.usage.buckets(query.start, query.page_end, query.width, columns, query.filters)
    named = [dict(zip(["bucket", *columns, *COUNTERS], row, strict=True)) for row in rows]

    def prices_of(model: str) -> object:
        route = svc.router.route_for(model)
        return None if route is None else route.prices

    return json_response(usage_report.cost_report(query, named, prices_of, svc.settings.usage.batch_discount))


async def analytics_usage(request: Request) -> Response:
    """The SDK's ``client.beta.organization.analytics.usage.list``: rows per group and
    time bucket (or per group over the whole range), sorted and paged."""
    query = usage_report.parse_analytics_query(request.query_params, now_us())
    columns = [usage_report.ANALYTICS_GROUPS[name] for name in query.group_by]
    rows = await services(request).batches.store.usage.buckets(query.start, query.end, query.width, columns, query.filters)
    named = [dict(zip(["bucket", *columns, *COUNTERS], row, strict=True)) for row in rows]
    return json_response(usage_report.analytics_usage(query, named))


routes = [
    Route("/v1/organizations/me", organization, methods=["GET"]),
    Route("/v1/organizations/workspaces", create_workspace, methods=["POST"]),
    Route("/v1/organizations/workspaces", list_workspaces, methods=["GET"]),
    Route("/v1/organizations/workspaces/{workspace_id}", retrieve_workspace, methods=["GET"]),
    Route("/v1/organizations/workspaces/{workspace_id}", update_workspace, methods=["POST"]),
    Route("/v1/organizations/workspaces/{workspace_id}/archive", archive_workspace, methods=["POST"]),
    Route("/v1/organizations/workspaces/{workspace_id}/rate_limits", list_workspace_rate_limits, methods=["GET"]),
    Route(
        "/v1/organizations/workspaces/{workspace_id}/rate_limits/{rate_limit_id}",
        update_workspace_rate_limit,
        methods=["POST"],
    ),
    Route("/v1/organizations/api_keys", list_api_keys, methods=["GET"]),
    Route("/v1/organizations/api_keys/{api_key_id}", retrieve_api_key, methods=["GET"]),
    Route("/v1/organizations/api_keys/{api_key_id}", update_api_key, methods=["POST"]),
    Route("/v1/organizations/usage_report/messages", messages_usage_report, methods=["GET"]),
    Route("/v1/organizations/cost_report", cost_report, methods=["GET"]),
    Route("/v1/organizations/analytics/usage", analytics_usage, methods=["GET"]),
]
