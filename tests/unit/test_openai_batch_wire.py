"""OpenAI's Batch API at the edge, pure: the create body, the input file's lines, what a
line becomes when it runs, the batch object's status and counts, and output lines."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from batchyard.protocol import batches as message_batches
from batchyard.protocol import openai_batches as wire
from batchyard.protocol.errors import ApiError
from batchyard.protocol.messages import ModelResolver


class Models(ModelResolver):
    def knows(self, model: str) -> bool:
        return model == "m"

    def max_tokens(self, model: str) -> int | None:
        return None


def line(custom_id: str = "a", **changes: Any) -> bytes:
    value: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    value.update(changes)
    return orjson.dumps({k: v for k, v in value.items() if v is not None})


def test_create_body_checks_name_the_parameter() -> None:
    good = {"input_file_id": "file_1", "endpoint": "/v1/embeddings", "completion_window": "24h"}
    params = wire.parse_create({**good, "metadata": {"k": "v"}, "output_expires_after": {"anchor": "created_at", "seconds": 3600}})
    assert (params.endpoint, params.metadata, params.output_ttl) == ("/v1/embeddings", {"k": "v"}, 3600)
    bad: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in good.items() if k != "endpoint"}, "endpoint"),
        ({**good, "endpoint": "/v1/moderations"}, "endpoint"),
        ({**good, "completion_window": "48h"}, "completion_window"),
        ({**good, "metadata": {"k": 1}}, "metadata.k"),
        ({**good, "metadata": {"k" * 65: "v"}}, "metadata"),
        ({**good, "metadata": {"k": "v" * 513}}, "metadata.k"),
        ({**good, "output_expires_after": {"anchor": "now", "seconds": 3600}}, "output_expires_after.anchor"),
        ({**good, "output_expires_after": {"anchor": "created_at", "seconds": True}}, "output_expires_after.seconds"),
    ]
    for body, param in bad:
        with pytest.raises(ApiError) as caught:
            wire.parse_create(body)
        assert caught.value.param == param and caught.value.status == 400


def test_input_lines_are_checked_in_order_and_numbered() -> None:
    reader = wire.InputReader(max_lines=10)
    good = reader.read([(1, line("a")), (2, b"   "), (3, line("b"))])
    assert [(g.index, g.custom_id, g.model) for g in good] == [(0, "a", "m"), (1, "b", "m")]
    assert orjson.loads(good[0].params)["url"] == "/v1/chat/completions"  # the whole line is kept
    assert reader.read([(4, line("a")), (5, line("c", method="GET")), (6, b"[1]"), (7, line("d", body=None))]) == []
    assert [(e["line"], e["code"], e["param"]) for e in reader.errors] == [
        (4, "duplicate_custom_id", "custom_id"),
        (5, "invalid_value", "method"),
        (6, "invalid_json_line", None),
        (7, "missing_required_parameter", "body"),
    ]
    assert reader.failed and reader.model == "m"
    nul = wire.InputReader(max_lines=10)
    assert nul.read([(1, line("a\u0000b"))]) == [] and nul.errors[0]["param"] == "custom_id"
    kept = wire.InputReader(max_lines=10).read([(1, line(body={"model": "m\u0000", "messages": []}))])
    assert kept[0].model is None  # stored without it; the line's error comes when it runs


def test_more_lines_than_allowed_is_one_error() -> None:
    reader = wire.InputReader(max_lines=2)
    reader.read([(n, line(f"c{n}")) for n in range(1, 6)])
    assert [e["code"] for e in reader.errors] == ["too_many_requests"] and reader.bad_lines == 1


def test_a_line_runs_as_its_endpoint_says() -> None:
    models = Models()
    chat = wire.prepare_line(line(), "/v1/chat/completions", models, orjson.loads)
    assert chat.validated is not None and chat.validated.model.model == "m"
    message = {"id": "msg_1", "model": "m", "content": [{"type": "text", "text": "yo"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 3, "output_tokens": 1}}
    shaped = chat.shape(message)
    assert shaped["object"] == "chat.completion" and shaped["choices"][0]["message"]["content"] == "yo"
    embed = wire.prepare_line(line(url="/v1/embeddings", body={"model": "m", "input": "x"}), "/v1/embeddings", models, orjson.loads)
    assert embed.passthrough == {"model": "m", "input": "x"} and embed.validated is None
    with pytest.raises(ApiError, match="not the batch's endpoint"):
        wire.prepare_line(line(url="/v1/embeddings"), "/v1/chat/completions", models, orjson.loads)
    with pytest.raises(ApiError, match="streaming is not supported"):
        wire.prepare_line(line(body={"model": "m", "stream": True, "messages": []}), "/v1/chat/completions", models, orjson.loads)
    with pytest.raises(ApiError) as caught:
        wire.prepare_line(line(url="/v1/embeddings", body={"model": "x", "input": "x"}), "/v1/embeddings", models, orjson.loads)
    assert caught.value.status == 404 and caught.value.code == "model_not_found" and caught.value.error_type == "not_found_error"


def batch(**changes: Any) -> SimpleNamespace:
    fields: dict[str, Any] = dict(
        id="batch_1", endpoint="/v1/chat/completions", input_file_id="file_1", output_file_id=None, error_file_id=None,
        processing_status="in_progress", request_count=10, succeeded=0, errored=0, canceled=0, expired=0,
        created_at=5_000_000, expires_at=9_000_000, ended_at=None, cancel_initiated_at=None, finalized_at=None,
        details=orjson.dumps({"metadata": None, "model": "m"}),
    )
    fields.update(changes)
    return SimpleNamespace(**fields)


def test_status_and_counts_through_the_lifecycle() -> None:
    running = wire.batch_object(batch(), {"succeeded": 4, "errored": 1})
    assert running["status"] == "in_progress" and running["request_counts"] == {"total": 10, "completed": 4, "failed": 1}
    assert running["in_progress_at"] == 5 and running["finalizing_at"] is None
    ended = dict(processing_status="ended", ended_at=7_000_000, succeeded=8, errored=2)
    assert wire.batch_object(batch(**ended))["status"] == "finalizing"
    done = wire.batch_object(batch(**ended, finalized_at=8_000_000))
    assert (done["status"], done["completed_at"], done["request_counts"]) == ("completed", 8, {"total": 10, "completed": 8, "failed": 2})
    assert wire.batch_object(batch(processing_status="canceling", cancel_initiated_at=6_000_000))["status"] == "cancelling"
    cancelled = wire.batch_object(batch(**ended, cancel_initiated_at=6_000_000, finalized_at=8_000_000))
    assert (cancelled["status"], cancelled["cancelled_at"], cancelled["cancelling_at"]) == ("cancelled", 8, 6)
    expired = wire.batch_object(batch(**{**ended, "expired": 3}, finalized_at=8_000_000))
    assert (expired["status"], expired["expired_at"]) == ("expired", 8)
    failed = wire.batch_object(batch(processing_status="ended", details=orjson.dumps({"errors": [{"code": "x"}]})))
    assert failed["status"] == "failed" and failed["errors"] == {"object": "list", "data": [{"code": "x"}]}
    assert failed["in_progress_at"] is None and failed["request_counts"]["total"] == 0


def test_output_lines_from_stored_results() -> None:
    usage = wire.Usage()
    body = {"object": "chat.completion", "usage": {"prompt_tokens": 5, "completion_tokens": 2,
                                                   "prompt_tokens_details": {"cached_tokens": 1}}}
    ok = orjson.loads(wire.output_line("batch_1", 0, "a", "succeeded", message_batches.succeeded_result(body), usage))
    assert ok["response"]["status_code"] == 200 and ok["response"]["body"] == body and ok["error"] is None
    assert ok["id"] == wire.line_id("batch_1", 0) != wire.line_id("batch_1", 1)  # stable per line
    failed = orjson.loads(
        wire.output_line("batch_1", 1, "b", "errored", message_batches.errored_result("rate_limit_error", "slow down"), usage)
    )
    assert failed["response"]["status_code"] == 429
    assert failed["response"]["body"] == {"error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}
    cancelled = orjson.loads(wire.output_line("batch_1", 2, "c", "canceled", None, usage))
    assert cancelled["response"] is None and cancelled["error"]["code"] == "batch_cancelled"
    assert orjson.loads(wire.output_line("batch_1", 3, "d", "expired", None, usage))["error"]["code"] == "batch_expired"
    assert usage.wire() == {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 1}, "output_tokens": 2,
                            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 7}
