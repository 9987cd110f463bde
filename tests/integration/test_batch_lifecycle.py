"""The whole batch lifecycle, driven by the official SDK (2.x, strict validation) against
a real server process."""

from __future__ import annotations

import re
from datetime import timedelta

import anthropic
import orjson
import pytest
from anthropic.types.messages import MessageBatchIndividualResponse

from support.helpers import make_client, raw, simple_params, wait_for_end
from support.server import ServerProcess

BATCH_KEYS = [
    "id",
    "type",
    "processing_status",
    "request_counts",
    "ended_at",
    "created_at",
    "expires_at",
    "archived_at",
    "cancel_initiated_at",
    "results_url",
]


def test_create_retrieve_wait_results_delete(client: anthropic.Anthropic, server) -> None:
    requests = [{"custom_id": f"req-{i}", "params": simple_params(f"Question number {i}")} for i in range(5)]
    batch = client.messages.batches.create(requests=requests)
    assert re.fullmatch(r"msgbatch_01[1-9A-HJ-NP-Za-km-z]{22}", batch.id)
    assert batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 5
    assert batch.request_counts.succeeded == 0
    assert batch.results_url is None and batch.ended_at is None and batch.archived_at is None
    assert batch.expires_at - batch.created_at == timedelta(hours=24)
    assert batch._request_id and batch._request_id.startswith("req_")

    ended = wait_for_end(client, batch.id)
    assert ended.request_counts.processing == 0
    assert ended.request_counts.succeeded == 5
    assert ended.ended_at is not None and ended.ended_at >= ended.created_at
    assert ended.results_url == f"{server.url}/v1/messages/batches/{batch.id}/results"

    results = list(client.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == [f"req-{i}" for i in range(5)]
    for line in results:
        assert isinstance(line, MessageBatchIndividualResponse)
        assert line.result.type == "succeeded"
        message = line.result.message
        assert message.id.startswith("msg_")
        assert message.role == "assistant" and message.type == "message"
        assert message.model == "claude-sim"
        assert message.content[0].type == "text" and message.content[0].text
        assert message.stop_reason == "end_turn"
        assert message.usage.service_tier == "batch"
        assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0

    deleted = client.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    for call in (
        lambda: client.messages.batches.retrieve(batch.id),
        lambda: client.messages.batches.cancel(batch.id),
        lambda: client.messages.batches.delete(batch.id),
    ):
        with pytest.raises(anthropic.NotFoundError) as err:
            call()
        assert err.value.body["error"] == {"type": "not_found_error", "message": f"Message Batch {batch.id} not found."}
    with raw(server.url) as http:
        gone = http.get(f"/v1/messages/batches/{batch.id}/results")
    assert gone.status_code == 404
    assert gone.json()["error"]["message"] == f"Message Batch {batch.id} not found."


def test_wire_shape_of_a_batch(client: anthropic.Anthropic, server) -> None:
    batch = client.messages.batches.create(requests=[{"custom_id": "only", "params": simple_params()}])
    with raw(server.url) as http:
        response = http.get(f"/v1/messages/batches/{batch.id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["request-id"].startswith("req_")
    body = response.json()
    assert list(body) == BATCH_KEYS
    assert list(body["request_counts"]) == ["processing", "succeeded", "errored", "canceled", "expired"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", body["created_at"])
    ended = wait_for_end(client, batch.id)
    with raw(server.url) as http:
        body = http.get(f"/v1/messages/batches/{batch.id}").json()
    assert body["processing_status"] == "ended"
    assert body["request_counts"] == {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0}
    assert body["results_url"] == ended.results_url


def test_results_file_framing_and_headers(client: anthropic.Anthropic, server) -> None:
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"line_{i}", "params": simple_params(f"text {i}")} for i in range(30)]
    )
    wait_for_end(client, batch.id)
    with raw(server.url) as http:
        response = http.get(f"/v1/messages/batches/{batch.id}/results", headers={"accept": "application/binary"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-jsonl"
    assert response.headers["content-disposition"] == f"attachment; filename*=utf-8''{batch.id}_results.jsonl"
    assert response.headers["request-id"].startswith("req_")
    body = response.content
    assert body.endswith(b"\n") and b"\n\n" not in body
    lines = body.split(b"\n")[:-1]
    assert len(lines) == 30
    assert {orjson.loads(line)["custom_id"] for line in lines} == {f"line_{i}" for i in range(30)}


def test_list_pages_newest_first_in_both_directions(client: anthropic.Anthropic, server) -> None:
    created = [client.messages.batches.create(requests=[{"custom_id": "x", "params": simple_params()}]).id for _ in range(5)]
    newest_first = list(reversed(created))

    first_page = client.messages.batches.list(limit=2)
    assert [b.id for b in first_page.data] == newest_first[:2]
    assert first_page.has_more is True
    assert first_page.first_id == newest_first[0] and first_page.last_id == newest_first[1]

    # Forward: the SDK follows last_id with after_id until has_more is false.
    seen = [b.id for b in client.messages.batches.list(limit=2)]
    assert seen[:5] == newest_first
    assert seen == sorted(seen, reverse=True)

    # Backward: starting before the oldest of ours, the SDK pages toward newer ones.
    older_side = client.messages.batches.list(limit=2, before_id=created[0])
    assert [b.id for b in older_side.data] == [created[2], created[1]]
    assert older_side.has_more is True
    walked = [b.id for b in client.messages.batches.list(limit=2, before_id=created[0])]
    assert set(created[1:]) <= set(walked)

    after = client.messages.batches.list(limit=3, after_id=created[3])
    assert [b.id for b in after.data][:3] == [created[2], created[1], created[0]]

    with raw(server.url) as http:
        newest = http.get("/v1/messages/batches", params={"limit": 1, "before_id": created[-1]}).json()
    assert newest == {"data": [], "has_more": False, "first_id": None, "last_id": None}


def test_cancel_mid_run_with_slow_backend(client: anthropic.Anthropic, server) -> None:
    requests = [{"custom_id": f"slow-{i}", "params": simple_params(f"slow {i}", model="slow-model")} for i in range(20)]
    batch = client.messages.batches.create(requests=requests)
    canceled = client.messages.batches.cancel(batch.id)
    assert canceled.processing_status == "canceling"
    assert canceled.cancel_initiated_at is not None
    assert canceled.request_counts.processing == 20
    assert canceled.results_url is None

    ended = wait_for_end(client, batch.id)
    counts = ended.request_counts
    assert counts.processing == 0
    assert counts.canceled >= 14  # two slots at 300 ms each: only a few could have started
    assert counts.succeeded + counts.errored + counts.canceled + counts.expired == 20

    results = list(client.messages.batches.results(batch.id))
    assert len(results) == 20
    by_type: dict[str, int] = {}
    for line in results:
        by_type[line.result.type] = by_type.get(line.result.type, 0) + 1
    assert by_type.get("canceled", 0) == counts.canceled
    assert by_type.get("succeeded", 0) == counts.succeeded
    with raw(server.url) as http:
        text = http.get(f"/v1/messages/batches/{batch.id}/results").text
    canceled_lines = [orjson.loads(line) for line in text.splitlines() if '"canceled"' in line]
    assert canceled_lines and all(line["result"] == {"type": "canceled"} for line in canceled_lines)

    again = client.messages.batches.cancel(batch.id)
    assert again.processing_status == "ended"
    assert again.model_dump() == client.messages.batches.retrieve(batch.id).model_dump()


def test_delete_and_results_refused_while_in_progress(client: anthropic.Anthropic, server) -> None:
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"s{i}", "params": simple_params(model="slow-model")} for i in range(6)]
    )
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.batches.delete(batch.id)
    assert err.value.status_code == 400
    assert err.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "In progress batches cannot be deleted. Consider canceling the batch instead.",
    }
    assert err.value.response.headers["x-should-retry"] == "false"

    with raw(server.url) as http:
        early = http.get(f"/v1/messages/batches/{batch.id}/results")
    assert early.status_code == 404
    assert early.json()["error"] == {
        "type": "not_found_error",
        "message": f"Message Batch {batch.id} has no available results.",
    }
    # The SDK itself refuses before calling the results URL.
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        list(client.messages.batches.results(batch.id))

    client.messages.batches.cancel(batch.id)
    wait_for_end(client, batch.id)
    assert client.messages.batches.delete(batch.id).id == batch.id


def test_a_canceling_batch_cannot_be_deleted(fresh_database_url: str, tmp_path) -> None:
    """With no engine to finish it, a canceled batch stays canceling: still not ended."""
    api = ServerProcess(fresh_database_url, workdir=tmp_path, extra_args=["--no-engine"]).start()
    try:
        client = make_client(api.url)
        batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": simple_params()}])
        assert client.messages.batches.cancel(batch.id).processing_status == "canceling"
        with pytest.raises(anthropic.BadRequestError) as err:
            client.messages.batches.delete(batch.id)
        assert err.value.body["error"]["message"] == (
            "In progress batches cannot be deleted. Consider canceling the batch instead."
        )
        assert client.messages.batches.retrieve(batch.id).processing_status == "canceling"
    finally:
        api.stop()


def test_bad_params_become_errored_lines(client: anthropic.Anthropic, server) -> None:
    good = simple_params()
    lines = {
        "no-messages": {"model": "claude-sim", "max_tokens": 10},
        "unknown-model": {**good, "model": "claude-does-not-exist-9"},
        "streaming": {**good, "stream": True},
        "zero-tokens": {**good, "max_tokens": 0},
        "extra-field": {**good, "bogus": 1},
        "too-many-tokens": {**good, "model": "capped-model", "max_tokens": 100},
        "good": good,
    }
    with raw(server.url) as http:
        created = http.post(
            "/v1/messages/batches",
            json={"requests": [{"custom_id": k, "params": v} for k, v in lines.items()]},
        )
    assert created.status_code == 200, created.text
    batch_id = created.json()["id"]
    ended = wait_for_end(client, batch_id)
    assert ended.request_counts.errored == 6 and ended.request_counts.succeeded == 1
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch_id)}
    expected = {
        "no-messages": ("invalid_request_error", "messages: Field required"),
        "unknown-model": ("not_found_error", "model: claude-does-not-exist-9"),
        "streaming": ("invalid_request_error", '"stream=True" is not supported in the Message Batches API'),
        "zero-tokens": ("invalid_request_error", "max_tokens: must be greater than or equal to 1"),
        "extra-field": ("invalid_request_error", "bogus: Extra inputs are not permitted"),
        "too-many-tokens": (
            "invalid_request_error",
            "max_tokens: 100 > 64, which is the maximum allowed number of output tokens for capped-model",
        ),
    }
    for custom_id, (kind, message) in expected.items():
        result = results[custom_id]
        assert result.type == "errored", custom_id
        assert result.error.type == "error"
        assert result.error.error.type == kind, custom_id
        assert result.error.error.message == message
        assert result.error.request_id is None
    assert results["good"].type == "succeeded"


def test_simulator_faults_become_errored_lines(client: anthropic.Anthropic) -> None:
    requests = [{"custom_id": f"f{i}", "params": simple_params(f"flaky {i}", model="flaky-model")} for i in range(40)]
    batch = client.messages.batches.create(requests=requests)
    ended = wait_for_end(client, batch.id)
    assert 0 < ended.request_counts.errored < 40
    assert ended.request_counts.errored + ended.request_counts.succeeded == 40
    errors = {r.result.error.error.type for r in client.messages.batches.results(batch.id) if r.result.type == "errored"}
    assert errors <= {"api_error", "overloaded_error"} and errors


def test_same_params_give_the_same_reply(client: anthropic.Anthropic) -> None:
    params = simple_params("Tell me about gardens")
    ids = [client.messages.batches.create(requests=[{"custom_id": "a", "params": params}]).id for _ in range(2)]
    texts = []
    for batch_id in ids:
        wait_for_end(client, batch_id)
        (line,) = list(client.messages.batches.results(batch_id))
        texts.append(line.result.message.content[0].text)
    assert texts[0] == texts[1]


def test_beta_namespace_and_headers(client: anthropic.Anthropic) -> None:
    batch = client.beta.messages.batches.create(requests=[{"custom_id": "b", "params": simple_params()}])
    assert batch.processing_status == "in_progress"
    assert client.beta.messages.batches.retrieve(batch.id).id == batch.id
    assert batch.id in [b.id for b in client.beta.messages.batches.list(limit=50)]
    wait_for_end(client, batch.id)
    (line,) = list(client.beta.messages.batches.results(batch.id))
    assert line.result.type == "succeeded"
    explicit = client.messages.batches.retrieve(batch.id, extra_headers={"anthropic-beta": "message-batches-2024-09-24"})
    assert explicit.id == batch.id


def test_both_credentials_and_versions(server) -> None:
    import httpx

    body = {"requests": [{"custom_id": "v", "params": simple_params()}]}
    for headers in (
        {"x-api-key": "k1", "anthropic-version": "2023-06-01"},
        {"authorization": "Bearer k2", "anthropic-version": "2026-10-21"},
    ):
        response = httpx.post(f"{server.url}/v1/messages/batches", json=body, headers=headers)
        assert response.status_code == 200, response.text

    missing_key = httpx.get(f"{server.url}/v1/messages/batches", headers={"anthropic-version": "2023-06-01"})
    assert missing_key.status_code == 401
    assert missing_key.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key header is required"},
        "request_id": missing_key.headers["request-id"],
    }
    assert missing_key.headers["x-should-retry"] == "false"

    missing_version = httpx.get(f"{server.url}/v1/messages/batches", headers={"x-api-key": "k"})
    assert missing_version.status_code == 400
    assert missing_version.json()["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }
    unknown = httpx.get(f"{server.url}/v1/messages/batches", headers={"x-api-key": "k", "anthropic-version": "2024-01-01"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"] == (
        "anthropic-version: '2024-01-01' is not a supported version. Supported versions: 2023-06-01, 2026-10-21"
    )


def test_unknown_route_and_wrong_method(server) -> None:
    with raw(server.url) as http:
        missing = http.get("/v1/_stainless_unknown_path")
        wrong = http.put("/v1/messages/batches")
    assert missing.status_code == 404
    assert missing.json()["error"] == {"type": "not_found_error", "message": "Not found"}
    assert missing.json()["request_id"] == missing.headers["request-id"]
    assert wrong.status_code == 405
    assert wrong.json()["error"]["type"] == "invalid_request_error"
    assert wrong.headers["content-type"] == "application/json"


def test_bearer_sdk_and_classic_headers_see_the_same_batches(server) -> None:
    modern = make_client(server.url)  # 2.x: Authorization: Bearer, 2026-10-21
    batch = modern.messages.batches.create(requests=[{"custom_id": "m", "params": simple_params()}])
    with raw(server.url) as http:  # x-api-key, 2023-06-01
        assert http.get(f"/v1/messages/batches/{batch.id}").json()["id"] == batch.id
