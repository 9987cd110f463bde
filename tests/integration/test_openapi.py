"""The OpenAPI document matches the server: schemathesis generates requests from it and
every answer must be no 5xx, of the declared content type and schema, and never a
batch of another workspace.

Each generated case is sent three ways: with a valid key of workspace "beta", with no key
(401 on /v1), and, for operations on a batch id, with the id of a batch that belongs to
workspace "alpha" (must be 404 for beta)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import openai
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from batchyard.api.openapi import openapi_document
from support.helpers import make_client, make_key, simple_params, wait_for_end
from support.server import ServerProcess

schema = schemathesis.openapi.from_dict(openapi_document())

CONFIG = """
[[models]]
id = "*"
backend = "simulator"
"""


@dataclass
class Fuzzed:
    server: ServerProcess
    beta_key: str
    alpha_batches: list[str] = field(default_factory=list)
    alpha_openai_batches: list[str] = field(default_factory=list)



@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    workdir = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{workdir / 'fuzz.db'}"
    alpha, beta = make_key("alpha", url, workdir), make_key("beta", url, workdir)
    server = ServerProcess(url, config_text=CONFIG, workdir=workdir)
    server.start()
    state = Fuzzed(server, beta)
    client = make_client(server.url, api_key=alpha)
    for n in (1, 2):
        batch = client.messages.batches.create(requests=[{"custom_id": f"a{i}", "params": simple_params()} for i in range(n)])
        wait_for_end(client, batch.id)
        state.alpha_batches.append(batch.id)
    lines = b"".join(
        orjson.dumps({"custom_id": f"o{i}", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "sim", "messages": [{"role": "user", "content": "hi"}]}}) + b"\n"
        for i in range(2)
    )
    openai_client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=alpha, max_retries=0)
    input_file = openai_client.files.create(file=("in.jsonl", lines), purpose="batch")
    created = openai_client.batches.create(input_file_id=input_file.id, endpoint="/v1/chat/completions", completion_window="24h")
    state.alpha_openai_batches.append(created.id)
    state.alpha_batches.append(created.id)
    yield state
    server.stop()


def test_served_document_is_the_one_tested(fuzzed: Fuzzed) -> None:
    served = httpx.get(f"{fuzzed.server.url}/openapi.json").json()
    assert served == openapi_document()
    assert {"/v1/messages/batches", "/v1/messages", "/v1/models", "/v1/messages/batches/{message_batch_id}/results",
            "/v1/batches", "/v1/batches/{batch_id}"} <= set(served["paths"])


def no_foreign_batch(alpha_batches: list[str]):  # type: ignore[no-untyped-def]
    def check(ctx, response, case):  # type: ignore[no-untyped-def]
        # An error may echo the id the caller sent; a successful answer naming it is a leak.
        if response.status_code >= 400:
            return None
        text = response.text if hasattr(response, "text") else response.content.decode(errors="replace")
        leaked = [b for b in alpha_batches if b in text]
        if leaked:
            raise AssertionError(f"workspace beta was shown alpha's batch {leaked[0]}: {response.status_code} {text[:300]}")
        return None

    return check


CHECKS = [checks.not_a_server_error, checks.response_schema_conformance, checks.content_type_conformance]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_and_keeps_workspaces_apart(case, fuzzed: Fuzzed) -> None:  # type: ignore[no-untyped-def]
    leak = no_foreign_batch(fuzzed.alpha_batches)
    keyed = {**(case.headers or {}), "x-api-key": fuzzed.beta_key}
    keyed.pop("authorization", None)
    case.call_and_validate(base_url=fuzzed.server.url, headers=keyed, checks=[*CHECKS, leak], timeout=30)

    anonymous = {k: v for k, v in (case.headers or {}).items() if k.lower() not in ("x-api-key", "authorization")}
    response = case.call(base_url=fuzzed.server.url, headers=anonymous, timeout=30)
    case.validate_response(response, checks=CHECKS)
    if case.path.startswith("/v1/"):
        assert response.status_code == 401, (case.path, response.status_code, response.text[:200])

    for name, foreign in (("message_batch_id", fuzzed.alpha_batches), ("batch_id", fuzzed.alpha_openai_batches)):
        if name not in (case.path_parameters or {}):
            continue
        for batch_id in foreign:
            case.path_parameters[name] = batch_id
            response = case.call(base_url=fuzzed.server.url, headers=keyed, timeout=30)
            case.validate_response(response, checks=[*CHECKS, leak])
            # A generated bad header (400) or method (405) may fail first; otherwise: not found.
            if response.status_code not in (400, 405, 429):
                assert response.status_code == 404, (case.method, case.path, response.status_code, response.text[:200])
