"""The usage and cost reports at the edge, pure: their queries (defaults, limits, pages,
refusals), bucket layout, and costs at route prices."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from starlette.datastructures import QueryParams

from batchyard.protocol import usage_report as wire
from batchyard.protocol.errors import ApiError
from batchyard.protocol.usage import Tokens, tokens_of
from batchyard.routes import Prices

HOUR = 3600 * 1_000_000
DAY = 24 * HOUR


def query(text: str) -> wire.ReportQuery:
    return wire.parse_query(QueryParams(text))


def test_defaults_limits_and_alignment() -> None:
    q = query("starting_at=2026-12-01T10:30:00Z")
    assert q.width == DAY and q.limit == 7 and q.end - q.start == 7 * DAY
    assert wire.report(q, [])["data"][0]["starting_at"].startswith("2026-12-01T00:00:00")  # the UTC day that holds it
    q = query("starting_at=2026-12-01T10:30:00Z&bucket_width=1h&ending_at=2026-12-02T00:00:00Z&group_by[]=model")
    assert (q.width, q.limit, q.group_by) == (HOUR, 24, ("model",)) and q.page_end - q.start == 14 * HOUR
    for bad, words in [
        ("starting_at=2026-12-01T00:00:00Z&bucket_width=1w", "bucket_width"),
        ("starting_at=2026-12-01T00:00:00Z&bucket_width=1h&limit=169", "between 1 and 168"),
        ("starting_at=yesterday", "valid datetime"),
        ("", "starting_at: Field required"),
        ("starting_at=2026-12-01T00:00:00Z&group_by[]=user", "group_by"),
        ("starting_at=2026-12-02T00:00:00Z&ending_at=2026-12-01T00:00:00Z", "after starting_at"),
        ("starting_at=2026-12-01T00:00:00Z&page=nonsense!", "page"),
    ]:
        with pytest.raises(ApiError, match=words):
            query(bad)


def test_pages_follow_each_other_to_the_end() -> None:
    first = query("starting_at=2026-12-01T00:00:00Z&ending_at=2026-12-11T00:00:00Z")
    page = wire.report(first, [])
    assert len(page["data"]) == 7 and page["has_more"] is True
    second = query(f"starting_at=2026-12-01T00:00:00Z&ending_at=2026-12-11T00:00:00Z&page={page['next_page']}")
    rest = wire.report(second, [])
    assert [b["starting_at"][:10] for b in rest["data"]] == ["2026-12-08", "2026-12-09", "2026-12-10"]
    assert rest["has_more"] is False and rest["next_page"] is None


def row(bucket: int, **values: Any) -> dict[str, Any]:
    base = {"bucket": bucket, "workspace_id": "w", "key_id": "k", "model": "m", "service_tier": "standard",
            "requests": 1, "uncached_input_tokens": 0, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": 0}
    return {**base, **values}


def test_results_land_in_their_buckets_with_nulls_for_what_is_not_grouped() -> None:
    q = query("starting_at=2026-12-01T00:00:00Z&group_by[]=workspace_id")
    body = wire.report(q, [row(q.start + DAY, uncached_input_tokens=5, output_tokens=7, cache_creation_input_tokens=2)])
    assert body["data"][0]["results"] == []
    (result,) = body["data"][1]["results"]
    assert result["workspace_id"] == "w" and result["model"] is None and result["api_key_id"] is None
    assert (result["uncached_input_tokens"], result["output_tokens"]) == (5, 7)
    assert result["cache_creation"] == {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 2}


def test_costs_at_route_prices_with_the_batch_discount() -> None:
    q = wire.parse_cost_query(QueryParams("starting_at=2026-12-01T00:00:00Z&group_by[]=description"))
    rows = [
        row(q.start, uncached_input_tokens=1_000_000, output_tokens=100_000),
        row(q.start, service_tier="batch", uncached_input_tokens=1_000_000),
        row(q.start, model="free", uncached_input_tokens=10),
    ]
    prices = {"m": Prices(input=3, output=15)}
    body = wire.cost_report(q, rows, prices.get, 0.5)
    results = body["data"][0]["results"]
    amounts = {(r["model"], r["service_tier"], r["token_type"]): Decimal(r["amount"]) for r in results}
    assert amounts[("m", "standard", "uncached_input_tokens")] == Decimal(300)  # $3 = 300 cents
    assert amounts[("m", "standard", "output_tokens")] == Decimal(150)
    assert amounts[("m", "batch", "uncached_input_tokens")] == Decimal(150)  # half price
    free = next(r for r in results if r["model"] == "free")
    assert free["amount"] == "0" and "no price configured" in free["description"]
    with pytest.raises(ApiError, match="bucket_width"):
        wire.parse_cost_query(QueryParams("starting_at=2026-12-01T00:00:00Z&bucket_width=1h"))


def test_tokens_of_each_answer_shape() -> None:
    message = {"usage": {"input_tokens": 5, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 3, "output_tokens": 9}}
    assert tokens_of(message) == Tokens(5, 2, 3, 9)
    chat = {"usage": {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 6}}}
    assert tokens_of(chat) == Tokens(4, 0, 6, 4)
    assert tokens_of({"usage": {"prompt_tokens": 7, "total_tokens": 7}}) == Tokens(7, 0, 0, 0)  # embeddings
    assert tokens_of({"no": "usage"}) == Tokens()


def test_bounds_and_whole_buckets() -> None:
    with pytest.raises(ApiError, match="between 1970 and 9000"):
        query("starting_at=9999-12-31T00:00:00Z")
    q = query("starting_at=2026-12-01T00:00:00Z&ending_at=2026-12-01T05:30:00Z&bucket_width=1h")
    assert q.end - q.start == 6 * HOUR  # the last, partial hour is a whole bucket
    with pytest.raises(ApiError, match="models"):
        query("starting_at=2026-12-01T00:00:00Z&models[]=a%00b")
    assert tokens_of({"usage": {"input_tokens": 10**30}}).uncached_input == 1 << 40  # clamped
