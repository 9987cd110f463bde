"""Wire shapes of the Admin API (``client.organization`` in the ``anthropic`` SDK): the
organization, workspaces and API keys, every key of the SDK's types present. Pure: no I/O.

batchyard has one organization (the server), workspaces and their keys. Fields it has no
notion of take the values a plain organization shows: every workspace in the ``us`` geo with
unrestricted inference geos, no tags, no external key; keys with no expiry and no principal.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError, invalid_request, not_found
from .timestamps import to_rfc3339

ORGANIZATION_ID = "org_batchyard"
KEY_STATUSES = ("active", "inactive", "archived")
MAX_WORKSPACE_NAME = 40
DISPLAY_COLOR = "#6C5BB9"
MAX_LIMIT = 2**31 - 1
MAX_ID = 128


def plain_id(value: str | None, name: str, *, in_path: bool, missing: Any = None) -> str | None:
    """An id from a path or query: one that no stored id could be (too long, a NUL) is not
    found (in a path) or refused (in a query) before any database sees it."""
    if value is None or value == "":
        return None
    if len(value) > MAX_ID or "\x00" in value:
        if in_path:
            raise missing(value) if missing is not None else not_found(f"{name} not found.")
        raise invalid_request(f"{name}: not a valid id")
    return value


def organization(name: str) -> dict[str, Any]:
    return {"id": ORGANIZATION_ID, "type": "organization", "name": name}


def workspace(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "type": "workspace",
        "name": record.name,
        "created_at": to_rfc3339(record.created_at),
        "archived_at": to_rfc3339(record.archived_at),
        "display_color": DISPLAY_COLOR,
        "compartment_id": record.id,
        "data_residency": {"workspace_geo": "us", "allowed_inference_geos": "unrestricted", "default_inference_geo": "global"},
        "external_key_id": None,
        "tags": {},
        "user_profile_id": None,
    }


def api_key(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "type": "api_key",
        "name": record.name or "",
        "created_at": to_rfc3339(record.created_at),
        "created_by": None,  # keys are made with the CLI: no user of the API made them
        "expires_at": None,
        "partial_key_hint": record.prefix + "...",
        "principal": None,
        "scope": {"type": "workspace", "workspace_id": record.workspace_id},
        "status": record.status,
        "workspace_id": record.workspace_id,
    }


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def workspace_not_found(workspace_id: str) -> ApiError:
    return not_found(f"Workspace {workspace_id[:128]} not found.")


def api_key_not_found(key_id: str) -> ApiError:
    return not_found(f"API key {key_id[:128]} not found.")


def workspace_name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str):
        raise invalid_request(f"{field}: Input should be a valid string")
    name = value.strip()
    if not name:
        raise invalid_request(f"{field}: String should have at least 1 character")
    if len(name) > MAX_WORKSPACE_NAME:
        raise invalid_request(f"{field}: String should have at most {MAX_WORKSPACE_NAME} characters")
    if "\x00" in name:
        raise invalid_request(f"{field}: must not contain NUL characters")
    return name


def key_update(body: Any) -> tuple[str | None, str | None]:
    """(name, status) of an API key update body."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object")
    unknown = set(body) - {"name", "status"}
    if unknown:
        raise invalid_request(f"{sorted(unknown)[0]}: Extra inputs are not permitted")
    name, status = body.get("name"), body.get("status")
    if name is not None:
        if not isinstance(name, str) or not name.strip() or len(name) > 256 or "\x00" in name:
            raise invalid_request("name: must be a string of 1 to 256 characters")
    if status is not None and status not in KEY_STATUSES:
        allowed = ", ".join(f"'{s}'" for s in KEY_STATUSES)
        raise invalid_request(f"status: Input should be {allowed}")
    return name, status


def boolean(raw: str | None, name: str) -> bool:
    if raw is None or raw == "":
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise invalid_request(f"{name}: Input should be a valid boolean")


# -- per-workspace rate limits ------------------------------------------------------------

# The limits batchyard enforces, as rate-limit groups: requests per minute (per key) for
# every model, and the cap on requests queued in unfinished batches.
RATE_LIMIT_GROUPS = {
    "rl_all_models": ({"type": "model_group", "id": "rlg_all_models", "display_name": "All models"}, "requests_per_minute"),
    "rl_batch": ({"type": "batch", "id": "rlg_batch"}, "max_queued_requests"),
}


def workspace_rate_limit(
    rate_limit_id: str,
    workspace_id: str,
    own: int | None,
    organization_value: int,
    include_inherited: bool,
    listed_models: tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """One group's entry for a workspace: its own value (source ``workspace``), or, with
    ``include_inherited``, the organization's (0 in the config: no limit, not listed)."""
    group, limiter = RATE_LIMIT_GROUPS[rate_limit_id]
    org_limit = organization_value or None
    models = list(listed_models) if group["type"] == "model_group" else None
    limits = []
    if own is not None:
        limits.append({"type": limiter, "value": own, "org_limit": org_limit, "source": {"type": "workspace"}})
    elif include_inherited and org_limit is not None:
        limits.append({"type": limiter, "value": org_limit, "org_limit": org_limit, "source": {"type": "organization"}})
    if not limits and not include_inherited:
        return None
    return {
        "type": "workspace_rate_limit",
        "rate_limit_id": rate_limit_id,
        "workspace_id": workspace_id,
        "group": group,
        "models": models,
        "limits": limits,
    }


def rate_limit_update(rate_limit_id: str, body: Any) -> tuple[str, int | None]:
    """The (limiter, value or None to clear) of an update body for one group."""
    if rate_limit_id not in RATE_LIMIT_GROUPS:
        raise not_found(f"Rate limit {rate_limit_id[:128]} not found.")
    _, limiter = RATE_LIMIT_GROUPS[rate_limit_id]
    if not isinstance(body, dict) or not isinstance(body.get("limits"), list):
        raise invalid_request("limits: Field required")
    value: int | None = None
    seen = False
    for i, item in enumerate(body["limits"]):
        if not isinstance(item, dict) or item.get("type") != limiter:
            raise invalid_request(f"limits.{i}.type: this group's only limiter is {limiter!r}")
        raw = item.get("value")
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_LIMIT):
            raise invalid_request(
                f"limits.{i}.value: Input should be an integer from 0 (no limit) to {MAX_LIMIT}, or null"
            )
        value, seen = raw, True
    if not seen:
        raise invalid_request(f"limits: name the {limiter!r} limiter")
    return limiter, value
