"""The Admin API's usage and cost reports (``GET /v1/organizations/usage_report/messages``,
``GET /v1/organizations/cost_report``): their queries and answers, as the Admin API
reference documents them. Pure: no I/O.

Buckets are aligned on UTC boundaries of their width (a ``1d`` bucket starts at midnight)
from the one that holds ``starting_at``, to ``ending_at`` (exclusive); a page holds
``limit`` buckets and ``next_page`` names the first bucket of the next. A bucket with no
usage has no results. Cache writes are reported as ``ephemeral_5m_input_tokens`` (the
default cache lifetime: batchyard does not tell the two apart).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .errors import invalid_request
from .timestamps import to_rfc3339

MINUTE = 60_000_000
WIDTHS = {"1m": MINUTE, "1h": 60 * MINUTE, "1d": 24 * 60 * MINUTE}
LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}  # buckets per page: default, most
GROUPS = {"api_key_id": "key_id", "workspace_id": "workspace_id", "model": "model", "service_tier": "service_tier"}
FILTERS = {"api_key_ids": "key_id", "workspace_ids": "workspace_id", "models": "model", "service_tiers": "service_tier"}
UNGROUPED = ("context_window", "inference_geo")  # always null here
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ReportQuery:
    start: int  # microseconds, the first bucket's start
    end: int  # exclusive
    width: int
    limit: int
    group_by: tuple[str, ...]  # the report's names (api_key_id, ...)
    filters: dict[str, tuple[str, ...]]  # by column

    @property
    def page_end(self) -> int:
        return min(self.end, self.start + self.limit * self.width)


def parse_time(raw: str | None, name: str) -> int:
    if raw is None or not raw.strip():
        raise invalid_request(f"{name}: Field required")
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise invalid_request(f"{name}: Input should be a valid datetime (RFC 3339)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if not EARLIEST <= moment <= LATEST:
        raise invalid_request(f"{name}: must be between 1970 and 9000")
    return int(moment.timestamp() * 1_000_000)


def page_token(start: int) -> str:
    return "page_" + base64.urlsafe_b64encode(str(start).encode()).decode().rstrip("=")


def parse_page(token: str) -> int:
    body = token.removeprefix("page_")
    try:
        return int(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid_request("page: Invalid page cursor") from None


def parse_query(params: Any) -> ReportQuery:
    """From the query string (a Starlette ``QueryParams``: ``group_by[]`` and the filter
    arrays repeat)."""
    width_name = params.get("bucket_width") or "1d"
    if width_name not in WIDTHS:
        raise invalid_request(f"bucket_width: Input should be {', '.join(repr(w) for w in WIDTHS)}")
    width = WIDTHS[width_name]
    default_limit, most = LIMITS[width_name]
    raw_limit = params.get("limit")
    try:
        limit = default_limit if raw_limit in (None, "") else int(raw_limit)
    except ValueError:
        raise invalid_request("limit: Input should be a valid integer") from None
    if not 1 <= limit <= most:
        raise invalid_request(f"limit: Input should be between 1 and {most} for bucket_width {width_name!r}")
    starting = parse_time(params.get("starting_at"), "starting_at")
    start = starting - starting % width
    end = parse_time(params.get("ending_at"), "ending_at") if params.get("ending_at") else start + limit * width
    if end <= starting:
        raise invalid_request("ending_at: must be after starting_at")
    end += -(end - start) % width  # whole buckets: the last one is not cut short
    if params.get("page"):
        resumed = parse_page(params["page"])
        if resumed < start or resumed >= end or (resumed - start) % width:
            raise invalid_request("page: Invalid page cursor")
        start = resumed
    group_by = tuple(dict.fromkeys(params.getlist("group_by[]") + params.getlist("group_by")))
    for name in group_by:
        if name not in GROUPS and name not in UNGROUPED:
            raise invalid_request(f"group_by: Input should be one of {', '.join(repr(g) for g in (*GROUPS, *UNGROUPED))}")
    filters = {
        column: tuple(params.getlist(f"{name}[]") + params.getlist(name)) for name, column in FILTERS.items()
    }
    for name, column in FILTERS.items():
        if any("\x00" in v or len(v) > 256 for v in filters[column]):
            raise invalid_request(f"{name}: not a valid value")
    return ReportQuery(start, end, width, limit, tuple(g for g in group_by if g in GROUPS), filters)


def result(row: dict[str, Any], group_by: tuple[str, ...]) -> dict[str, Any]:
    return {
        "uncached_input_tokens": int(row["uncached_input_tokens"]),
        "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": int(row["cache_creation_input_tokens"])},
        "cache_read_input_tokens": int(row["cache_read_input_tokens"]),
        "output_tokens": int(row["output_tokens"]),
        "server_tool_use": {"web_search_requests": 0},
        "api_key_id": (row["key_id"] or None) if "api_key_id" in group_by else None,
        "workspace_id": row["workspace_id"] if "workspace_id" in group_by else None,
        "model": row["model"] if "model" in group_by else None,
        "service_tier": row["service_tier"] if "service_tier" in group_by else None,
        "context_window": None,
        "inference_geo": None,
    }


def report(query: ReportQuery, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The page of buckets from ``query.start`` to its page end, rows (each with its
    ``bucket``) placed in theirs."""
    page_end = query.page_end
    by_bucket: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_bucket.setdefault(int(row["bucket"]), []).append(result(row, query.group_by))
    data = []
    at = query.start
    while at < page_end:
        data.append(
            {
                "starting_at": _utc(at),
                "ending_at": _utc(min(at + query.width, query.end)),
                "results": by_bucket.get(at, []),
            }
        )
        at += query.width
    has_more = page_end < query.end
    return {"data": data, "has_more": has_more, "next_page": page_token(page_end) if has_more else None}


def _utc(micros: int) -> str:
    shown = to_rfc3339(micros)
    assert shown is not None
    return shown


# -- the cost report ----------------------------------------------------------------------

COST_GROUPS = ("workspace_id", "description")
TOKEN_TYPES = (  # (report name, counter, price field, words)
    ("uncached_input_tokens", "uncached_input_tokens", "input", "input tokens"),
    ("output_tokens", "output_tokens", "output", "output tokens"),
    ("cache_read_input_tokens", "cache_read_input_tokens", "cache_read", "cache read tokens"),
    ("cache_creation.ephemeral_5m_input_tokens", "cache_creation_input_tokens", "cache_write", "cache write tokens"),
)


def parse_cost_query(params: Any) -> ReportQuery:
    """The cost report's query: 1d buckets only, ``group_by[]`` workspace_id | description."""
    width_name = params.get("bucket_width") or "1d"
    if width_name != "1d":
        raise invalid_request("bucket_width: Input should be '1d'")
    group_by = tuple(dict.fromkeys(params.getlist("group_by[]") + params.getlist("group_by")))
    for name in group_by:
        if name not in COST_GROUPS:
            raise invalid_request("group_by: Input should be 'workspace_id' or 'description'")
    stripped = _WithoutGroups(params)
    query = parse_query(stripped)
    return ReportQuery(query.start, query.end, query.width, query.limit, group_by, query.filters)


class _WithoutGroups:
    """Query parameters with ``group_by`` left out (the cost report checks its own)."""

    def __init__(self, params: Any) -> None:
        self._params = params

    def get(self, name: str, default: Any = None) -> Any:
        return self._params.get(name, default)

    def getlist(self, name: str) -> list[str]:
        return [] if name.startswith("group_by") else list(self._params.getlist(name))

    def __getitem__(self, name: str) -> Any:
        return self._params[name]


def _cents(usd: Decimal) -> str:
    """A decimal string in cents (the lowest unit), as the cost report writes amounts."""
    cents = (usd * 100).quantize(Decimal("0.000001"))
    text = format(cents.normalize(), "f")
    return text if text not in ("-0", "") else "0"


def cost_report(
    query: ReportQuery, rows: list[dict[str, Any]], prices_of: Callable[[str], Any], batch_discount: float
) -> dict[str, Any]:
    """Costs of the usage rows (grouped by bucket, model and tier, and workspace when asked)
    at each model's route prices; batch lines at ``batch_discount`` off."""
    by_description = "description" in query.group_by
    by_workspace = "workspace_id" in query.group_by
    buckets: dict[int, dict[tuple[Any, ...], dict[str, Any]]] = {}
    for row in rows:
        prices = prices_of(row["model"])
        factor = Decimal(1) - Decimal(str(batch_discount)) if row["service_tier"] == "batch" else Decimal(1)
        workspace = row["workspace_id"] if by_workspace else None
        for token_type, counter, price_field, words in TOKEN_TYPES:
            tokens = int(row[counter])
            if not tokens:
                continue
            price = Decimal(str(getattr(prices, price_field))) if prices is not None else Decimal(0)
            usd = price * tokens / Decimal(1_000_000) * factor
            if by_description:
                described = f"{row['model']}: {words}, {row['service_tier']} tier"
                if prices is None:
                    described += " (no price configured: costs 0)"
                key: tuple[Any, ...] = (workspace, described, row["model"], row["service_tier"], token_type)
            else:
                key = (workspace,)
            entry = buckets.setdefault(int(row["bucket"]), {}).setdefault(key, {"usd": Decimal(0)})
            entry["usd"] += usd
    data = []
    at = query.start
    page_end = query.page_end
    while at < page_end:
        results = []
        for key, entry in sorted(buckets.get(at, {}).items(), key=lambda item: tuple(str(k) for k in item[0])):
            result = {
                "currency": "USD",
                "amount": _cents(entry["usd"]),
                "workspace_id": key[0],
                "description": None,
                "cost_type": None,
                "context_window": None,
                "model": None,
                "service_tier": None,
                "token_type": None,
            }
            if by_description:
                result.update(description=key[1], cost_type="tokens", model=key[2], service_tier=key[3], token_type=key[4])
            results.append(result)
        data.append({"starting_at": _utc(at), "ending_at": _utc(min(at + query.width, query.end)), "results": results})
        at += query.width
    has_more = page_end < query.end
    return {"data": data, "has_more": has_more, "next_page": page_token(page_end) if has_more else None}


# -- the SDK's analytics usage (client.beta.organization.analytics.usage) ------------------

ANALYTICS_GROUPS = {"workspace_id": "workspace_id", "api_key_id": "key_id", "model": "model", "service_tier": "service_tier"}
ANALYTICS_ORDER = ("total_tokens", "uncached_input_tokens", "output_tokens", "requests", "time")
GROUP_FIELDS = (
    "actor", "actor_type", "agent_id", "api_key_id", "claude_tag_category", "claude_tag_user_id", "context_window",
    "deployment_id", "environment_id", "inference_geo", "model", "organization_id", "product", "rbac_group_id",
    "service_tier", "session_id", "slack_channel_id", "speed", "user_profile_id", "workspace_id",
)
MAX_RANGE = 31 * 24 * 60 * MINUTE


@dataclass(frozen=True, slots=True)
class AnalyticsQuery:
    start: int
    end: int
    width: int  # the rows' width: a bucket, or the whole range
    group_by: tuple[str, ...]
    filters: dict[str, tuple[str, ...]]
    limit: int
    offset: int
    order_by: str
    descending: bool


def parse_analytics_query(params: Any, now: int) -> AnalyticsQuery:
    """``GET /v1/organizations/analytics/usage``: rows per group (and per time bucket when
    ``time_bucket_width`` is given), sorted, in pages of ``limit`` rows."""
    width_name = params.get("time_bucket_width") or None
    if width_name is not None and width_name not in WIDTHS:
        raise invalid_request(f"time_bucket_width: Input should be {', '.join(repr(w) for w in WIDTHS)}")
    starting = parse_time(params.get("starting_at"), "starting_at")
    if params.get("ending_at"):
        ending = parse_time(params.get("ending_at"), "ending_at")
    elif width_name is not None:
        raise invalid_request("ending_at: Field required when time_bucket_width is given")
    else:
        ending = min(now, starting + MAX_RANGE)
    if ending <= starting:
        raise invalid_request("ending_at: must be after starting_at")
    if ending - starting > (24 * 60 * MINUTE if width_name == "1m" else MAX_RANGE):
        raise invalid_request("ending_at: the range may be at most 31 days (24 hours with 1m buckets)")
    unit = WIDTHS[width_name] if width_name is not None else 60 * MINUTE
    start = starting - starting % unit
    end = ending + (-(ending - start) % unit)
    width = unit if width_name is not None else end - start
    group_by = tuple(dict.fromkeys(params.getlist("group_by[]") + params.getlist("group_by")))
    if len(group_by) > 5:
        raise invalid_request("group_by: at most 5")
    for name in group_by:
        if name not in ANALYTICS_GROUPS:
            supported = ", ".join(repr(g) for g in ANALYTICS_GROUPS)
            raise invalid_request(f"group_by: {name!r} is not available on this server (supported: {supported})")
    raw_limit = params.get("limit")
    try:
        limit = 20 if raw_limit in (None, "") else int(raw_limit)
    except ValueError:
        raise invalid_request("limit: Input should be a valid integer") from None
    if not 1 <= limit <= 1000:
        raise invalid_request("limit: Input should be between 1 and 1000")
    order_by = params.get("order_by") or "total_tokens"
    if order_by not in ANALYTICS_ORDER:
        raise invalid_request(f"order_by: Input should be one of {', '.join(repr(o) for o in ANALYTICS_ORDER)}")
    order = params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise invalid_request("order: Input should be 'asc' or 'desc'")
    offset = parse_page(params["page"]) if params.get("page") else 0
    if offset < 0:
        raise invalid_request("page: Invalid page cursor")
    filters = {column: tuple(params.getlist(f"{name}[]") + params.getlist(name)) for name, column in FILTERS.items()}
    for name, column in FILTERS.items():
        if any("\x00" in v or len(v) > 256 for v in filters[column]):
            raise invalid_request(f"{name}: not a valid value")
    return AnalyticsQuery(start, end, width, group_by, filters, limit, offset, order_by, order == "desc")


def analytics_usage(query: AnalyticsQuery, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One page of usage rows, each ``{starting_at, ending_at, usage, group}``."""
    items: list[dict[str, Any]] = []
    for row in rows:
        uncached, cache_write, cache_read, output = (
            int(row["uncached_input_tokens"]),
            int(row["cache_creation_input_tokens"]),
            int(row["cache_read_input_tokens"]),
            int(row["output_tokens"]),
        )
        group: dict[str, Any] = dict.fromkeys(GROUP_FIELDS)
        for name in query.group_by:
            value = row[ANALYTICS_GROUPS[name]]
            group[name] = (value or None) if name == "api_key_id" else value
        items.append(
            {
                "starting_at": _utc(int(row["bucket"])),
                "ending_at": _utc(min(int(row["bucket"]) + query.width, query.end)),
                "usage": {
                    "uncached_input_tokens": uncached,
                    "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": cache_write},
                    "cache_read_input_tokens": cache_read,
                    "output_tokens": output,
                    "total_tokens": uncached + cache_write + cache_read + output,
                    "requests": int(row["requests"]),
                    "server_tool_use": {"web_search_requests": 0},
                },
                "group": group,
            }
        )

    def sort_key(item: dict[str, Any]) -> Any:
        if query.order_by == "time":
            return item["starting_at"]
        return item["usage"][query.order_by]

    items.sort(key=lambda item: tuple(str(item["group"][f]) for f in GROUP_FIELDS))  # a stable order among equals
    items.sort(key=sort_key, reverse=query.descending)
    page = items[query.offset : query.offset + query.limit]
    more = query.offset + query.limit < len(items)
    return {
        "data": page,
        "has_more": more,
        "next_page": page_token(query.offset + query.limit) if more else None,
        "data_refreshed_at": None,
    }
