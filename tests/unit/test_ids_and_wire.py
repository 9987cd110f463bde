"""Ids, timestamps and the batch wire shapes."""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from batchyard.protocol import batches as wire
from batchyard.protocol.ids import BASE58_ALPHABET, is_batch_id, new_batch_id, new_message_id, new_request_id
from batchyard.protocol.timestamps import to_rfc3339


def test_batch_ids_have_the_real_shape_and_sort_by_time() -> None:
    ids = [new_batch_id(now_ms=t) for t in (1_000, 2_000, 2_001, 10**12, 2**47)]
    for batch_id in ids:
        assert re.fullmatch(r"msgbatch_01[1-9A-HJ-NP-Za-km-z]{22}", batch_id)
        assert is_batch_id(batch_id)
    assert ids == sorted(ids)
    assert list(BASE58_ALPHABET) == sorted(BASE58_ALPHABET)


def test_other_ids() -> None:
    assert re.fullmatch(r"msg_01[1-9A-HJ-NP-Za-km-z]{22}", new_message_id())
    assert re.fullmatch(r"req_01[1-9A-HJ-NP-Za-km-z]{22}", new_request_id())
    assert new_message_id() != new_message_id()


def test_hostile_ids_are_not_batch_ids() -> None:
    for value in ("", "msgbatch_", "msgbatch_01" + "0" * 22, "msgbatch_01" + "a" * 23, "../etc", "msgbatch_01'--" + "a" * 18):
        assert not is_batch_id(value)


def test_timestamps() -> None:
    assert to_rfc3339(None) is None
    assert to_rfc3339(1_738_160_740_141_141) == "2025-01-29T14:25:40.141141+00:00"
    assert to_rfc3339(0) == "1970-01-01T00:00:00.000000+00:00"


@dataclass
class FakeBatch:
    id: str = "msgbatch_01" + "a" * 22
    processing_status: str = "in_progress"
    request_count: int = 3
    succeeded: int = 2
    errored: int = 1
    canceled: int = 0
    expired: int = 0
    created_at: int = 0
    expires_at: int = 86_400_000_000
    ended_at: int | None = None
    cancel_initiated_at: int | None = None
    archived_at: int | None = None


def test_counts_stay_processing_until_the_end() -> None:
    running = wire.message_batch(FakeBatch(), "http://x/results")
    assert running["request_counts"] == {"processing": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    assert running["results_url"] is None
    ended = wire.message_batch(FakeBatch(processing_status="ended", ended_at=5), "http://x/results")
    assert ended["request_counts"] == {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0}
    assert ended["results_url"] == "http://x/results"


def test_result_lines() -> None:
    assert wire.result_line("a", "canceled", None) == b'{"custom_id":"a","result":{"type":"canceled"}}\n'
    line = orjson.loads(wire.result_line('we"ird', "errored", wire.errored_result("not_found_error", "model: x")))
    assert line == {
        "custom_id": 'we"ird',
        "result": {
            "type": "errored",
            "error": {"type": "error", "error": {"type": "not_found_error", "message": "model: x"}, "request_id": None},
        },
    }
    assert wire.content_disposition("msgbatch_01abc") == "attachment; filename*=utf-8''msgbatch_01abc_results.jsonl"
