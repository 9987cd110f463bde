"""GET /v1/models and /v1/models/{id}: the configured named routes as ModelInfo."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from support.helpers import make_client, raw
from support.server import ServerProcess

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
    served = client.models.retrieve("sim-anything")  # any name a route serves answers
    assert served.id == "sim-anything" and served.capabilities is not None
    with pytest.raises(anthropic.NotFoundError) as err:
        client.models.retrieve("nope")
    assert err.value.body["error"] == {"type": "not_found_error", "message": "model: nope"}


def test_bad_list_queries(server) -> None:
    with raw(server.url) as http:
        assert http.get("/v1/models", params={"limit": 0}).json()["error"]["message"] == (
            "limit: Input should be greater than or equal to 1"
        )
        unknown = http.get("/v1/models", params={"after_id": "ghost"})
        assert unknown.status_code == 400
        assert unknown.json()["error"]["message"] == "after_id: no model with id 'ghost'"
        assert http.get("/v1/models?beta=true", headers={"anthropic-beta": "x"}).status_code == 200


CATALOGUE = """
[[models]]
id = "local-*"
backend = "simulator"
models = ["local-small", {id = "local-large", display_name = "Local Large", created_at = "2026-12-01T00:00:00Z", max_tokens = 100}]

[[models]]
id = "quiet-*"
backend = "simulator"
models = []

[[models]]
id = "*"
backend = "simulator"
"""


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("catalogue")
    proc = ServerProcess(f"sqlite:///{workdir / 'c.db'}", config_text=CATALOGUE, workdir=workdir).start()
    yield proc
    proc.stop()


def test_the_simulator_catch_all_lists_the_claude_models(catalogue: ServerProcess) -> None:
    client = make_client(catalogue.url)
    models = list(client.models.list(limit=1000))
    ids = [m.id for m in models]
    assert {"claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-4-5-20251001", "local-small", "local-large"} <= set(ids)
    assert not any(i.startswith("quiet-") for i in ids)
    dates = [m.created_at for m in models]
    assert dates == sorted(dates, reverse=True)  # newest first
    sonnet = client.models.retrieve("claude-sonnet-5-5")
    assert sonnet.display_name == "Claude Sonnet 5.5" and sonnet.max_input_tokens == 1_000_000
    assert sonnet.capabilities.batch.supported and sonnet.capabilities.thinking.types.adaptive.supported
    haiku = client.models.retrieve("claude-haiku-4-5")  # an alias answers with the model it names
    assert haiku.id == "claude-haiku-4-5-20251001" and haiku.max_tokens == 64_000
    assert client.models.retrieve("local-large").display_name == "Local Large"
    assert client.models.retrieve("quiet-one").id == "quiet-one"  # served, if not listed
    assert client.messages.create(model="claude-sonnet-5-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    with raw(catalogue.url) as http:  # (the SDK refuses such a max_tokens without streaming)
        refused = http.post("/v1/messages", json={"model": "claude-haiku-4-5", "max_tokens": 100_000,
                                                   "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 400 and refused.json()["error"]["message"] == (
        "max_tokens: 100000 > 64000, which is the maximum allowed number of output tokens for claude-haiku-4-5"
    )


def test_the_openai_sdk_lists_and_retrieves_models(catalogue: ServerProcess) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{catalogue.url}/v1", api_key="k", max_retries=0, _strict_response_validation=True)
    listed = [m.id for m in client.models.list()]
    assert "claude-opus-5-5" in listed and "local-small" in listed
    model = client.models.retrieve("claude-opus-5-5")
    assert model.object == "model" and model.owned_by == "batchyard" and model.created > 0
