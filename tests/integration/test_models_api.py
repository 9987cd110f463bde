"""GET /v1/models and /v1/models/{id}: the configured named routes as ModelInfo."""

from __future__ import annotations

import anthropic
import pytest

from support.helpers import raw

NAMED = ["claude-sim", "slow-model", "second-model", "flaky-model", "capped-model", "broken-model", "api-error-model", "midstream-model", "dripping-model"]


def test_list_shows_named_routes_only(client: anthropic.Anthropic) -> None:
    models = list(client.models.list(limit=1000))
    ids = [m.id for m in models]
    assert sorted(ids) == sorted(NAMED)
    assert "sim-*" not in ids
    assert ids[0] == "claude-sim"  # the newest release date comes first
    sim = models[0]
    assert sim.type == "model" and sim.display_name == "Claude Simulated"
    assert sim.created_at.year == 2026 and sim.lifecycle == "active"
    assert sim.max_input_tokens == 200000 and sim.max_tokens is None
    assert sim.deprecated_at is None and sim.retires_at is None and sim.line is None
    assert sim.capabilities is not None and sim.capabilities.batch.supported is True
    assert sim.capabilities.thinking.types.enabled.supported is True
    capped = next(m for m in models if m.id == "capped-model")
    assert capped.max_tokens == 64 and capped.display_name == "capped-model"


def test_wire_shape(server) -> None:
    with raw(server.url) as http:
        body = http.get("/v1/models/claude-sim").json()
    assert set(body) == {
        "type", "id", "display_name", "created_at", "lifecycle", "deprecated_at", "retires_at", "line",
        "max_input_tokens", "max_tokens", "capabilities",
    }
    assert body["created_at"] == "2026-01-15T00:00:00Z"


def test_paging_both_ways(client: anthropic.Anthropic) -> None:
    everything = [m.id for m in client.models.list(limit=1000)]
    page = client.models.list(limit=3)
    assert [m.id for m in page.data] == everything[:3] and page.has_more
    assert page.first_id == everything[0] and page.last_id == everything[2]
    assert [m.id for m in client.models.list(limit=3)] == everything  # auto-paging forward
    nxt = client.models.list(limit=3, after_id=everything[2])
    assert [m.id for m in nxt.data] == everything[3:6]
    back = client.models.list(limit=2, before_id=everything[4])
    assert [m.id for m in back.data] == everything[2:4] and back.has_more
    last = client.models.list(limit=1000, after_id=everything[-1])
    assert last.data == [] and last.has_more is False and last.first_id is None


def test_retrieve_and_unknown(client: anthropic.Anthropic) -> None:
    assert client.models.retrieve("slow-model").id == "slow-model"
    for missing in ("nope", "sim-anything"):  # a pattern route is no model of its own
        with pytest.raises(anthropic.NotFoundError) as err:
            client.models.retrieve(missing)
        assert err.value.body["error"] == {"type": "not_found_error", "message": f"model: {missing}"}


def test_bad_list_queries(server) -> None:
    with raw(server.url) as http:
        assert http.get("/v1/models", params={"limit": 0}).json()["error"]["message"] == (
            "limit: Input should be greater than or equal to 1"
        )
        unknown = http.get("/v1/models", params={"after_id": "ghost"})
        assert unknown.status_code == 400
        assert unknown.json()["error"]["message"] == "after_id: no model with id 'ghost'"
        assert http.get("/v1/models?beta=true", headers={"anthropic-beta": "x"}).status_code == 200
