"""The streaming create-body reader: same verdicts as a whole-document parse, any window size."""

from __future__ import annotations

import io
import json

import orjson
import pytest

from batchyard.protocol import jsonscan
from batchyard.protocol.batch_create import BatchBodyReader
from batchyard.protocol.errors import ApiError


def read_all(body: bytes, max_requests: int = 100_000, chunk: int = 3):
    reader = BatchBodyReader(io.BytesIO(body), max_requests)
    lines = []
    while batch := reader.next_chunk(chunk):
        lines.extend(batch)
    return lines


@pytest.fixture(params=[(1, 4), (7, 16), (1 << 20, 1 << 20)], ids=["1-byte", "7-byte", "1MB"])
def window(request, monkeypatch):
    read_size, compact_at = request.param
    monkeypatch.setattr(jsonscan, "_READ_SIZE", read_size)
    monkeypatch.setattr(jsonscan, "_COMPACT_AT", compact_at)


def test_reads_lines_in_order_with_params_intact(window) -> None:
    items = [
        {
            "custom_id": f"id-{i}",
            "params": {
                "model": "m",
                "max_tokens": 10 ** (i % 5),
                "messages": [{"role": "user", "content": f"héllo \"{i}\" \\ ✓ 😀 {'x' * i}"}],
                "temperature": 0.25 * (i % 3),
                "nested": {"a": [1, 2.5e-3, True, None, -7]},
            },
        }
        for i in range(25)
    ]
    body = json.dumps({"requests": items}, indent=1, ensure_ascii=False).encode()
    lines = read_all(body)
    assert [line.index for line in lines] == list(range(25))
    assert [line.custom_id for line in lines] == [f"id-{i}" for i in range(25)]
    assert [orjson.loads(line.params) for line in lines] == [item["params"] for item in items]
    assert all(line.model == "m" for line in lines)


def test_big_integers_survive(window) -> None:
    body = b'{"requests": [{"custom_id": "a", "params": {"max_tokens": 123456789012345678901234567890}}]}'
    (line,) = read_all(body)
    assert json.loads(line.params) == {"max_tokens": 123456789012345678901234567890}


@pytest.mark.parametrize(
    "body",
    [
        b'{"requests": [{"custom_id": "a", "params": {}}',
        b'{"requests": [{"custom_id": "a", "params": {}}]',
        b'{"requests": [{"custom_id": "a", "params": {}},]}',
        b'{"requests": [{"custom_id": "a", "params": {}}] "x": 1}',
        b'{"requests": [{"custom_id": "a" "params": {}}]}',
        b'{"requests": [{"custom_id": "a", "params": {"n": 1.}}]}',
        b'{"requests": [{"custom_id": "a", "params": {"n": tru}}]}',
        b'{"requests": [{"custom_id": "a\\q", "params": {}}]}',
        b'{"requests": [{"custom_id": "a", "params": {}}]}\n\n  x',
        b'{requests: []}',
        b'  \n',
        b'{"requests": [1, 2, 3]\n,\n\n"other": {"a": [1, 2, }}',
    ],
)
def test_syntax_errors_match_the_stdlib_message(window, body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(body)
    with pytest.raises(ApiError) as got:
        read_all(body)
    assert got.value.message == f"The request body is not valid JSON: {expected.value}"


def test_nan_and_deep_nesting_and_bad_utf8_are_refused(window) -> None:
    for body, fragment in [
        (b'{"requests": [{"custom_id": "a", "params": {"t": NaN}}]}', "NaN is not valid JSON"),
        (b'{"requests": [{"custom_id": "a", "params": ' + b"[" * 10_000 + b"]" * 10_000 + b"}]}", "Nesting is too deep"),
        (b'{"requests": [{"custom_id": "\xff\xfe", "params": {}}]}', "invalid UTF-8 at byte 29"),
        (b'{"requests": [{"custom_id": "a", "params": {"n": ' + b"9" * 5000 + b"}}]}", "integer string conversion"),
    ]:
        with pytest.raises(ApiError) as got:
            read_all(body)
        assert got.value.status == 400
        assert got.value.message.startswith("The request body is not valid JSON: ")
        assert fragment in got.value.message


def test_error_precedence_syntax_then_fields_then_count_then_duplicates() -> None:
    bad_field = {"custom_id": "bad/id", "params": {}}
    dup = {"custom_id": "d", "params": {}}
    body = orjson.dumps({"requests": [dup, dup, bad_field]})
    with pytest.raises(ApiError, match=r"requests\.2\.custom_id: String should match"):
        read_all(body)
    with pytest.raises(ApiError, match="not valid JSON"):
        read_all(body[:-1])
    with pytest.raises(ApiError, match="at most 2 items after validation, not 3"):
        read_all(orjson.dumps({"requests": [dup, dup, {"custom_id": "z", "params": {}}]}), max_requests=2)
    with pytest.raises(ApiError, match="Duplicate custom_id found: d"):
        read_all(orjson.dumps({"requests": [dup, {"custom_id": "e", "params": {}}, dup]}))


def test_lines_stop_coming_once_the_body_is_known_bad() -> None:
    body = orjson.dumps({"requests": [{"custom_id": f"r{i}", "params": {}} for i in range(10)] + [{"custom_id": "r1", "params": {}}]})
    reader = BatchBodyReader(io.BytesIO(body), 100)
    first = reader.next_chunk(5)
    assert [line.custom_id for line in first] == [f"r{i}" for i in range(5)]
    with pytest.raises(ApiError, match="Duplicate custom_id found: r1"):
        while reader.next_chunk(5):
            pass


def test_model_is_extracted_only_when_a_string() -> None:
    body = orjson.dumps({"requests": [{"custom_id": "a", "params": {"model": 5}}, {"custom_id": "b", "params": {"model": "x"}}]})
    assert [line.model for line in read_all(body)] == [None, "x"]


def test_memory_stays_bounded_on_a_large_body() -> None:
    """A 60 MB body is read through a window: peak traced memory stays far below it."""
    import tracemalloc

    params = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 1000}]}
    item = orjson.dumps({"custom_id": "ID", "params": params})
    count = 60_000
    body = b'{"requests": [' + b",".join(item.replace(b"ID", f"r{i}".encode()) for i in range(count)) + b"]}"
    stream = io.BytesIO(body)
    reader = BatchBodyReader(stream, 100_000)
    tracemalloc.start()
    seen = 0
    while chunk := reader.next_chunk(2000):
        seen += len(chunk)
        del chunk
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seen == count
    assert peak < 40 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for a {len(body) / 1e6:.0f} MB body"
