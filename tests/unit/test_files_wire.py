"""The pure parts of the Files APIs: names, types, page cursors, the JSONL check, errors."""

from __future__ import annotations

import pytest

from batchyard.files import BACKEND_TARGETS, TEXT_ONLY, FileTargets, targets_of
from batchyard.protocol import files as wire
from batchyard.protocol.errors import ApiError


@pytest.mark.parametrize(
    ("raw", "mime", "kept"),
    [
        ("../../etc/passwd", "text/plain", "passwd"),
        ("C:\\temp\\a.pdf", "application/pdf", "a.pdf"),
        ("", "text/plain", "unnamed.txt"),
        (None, "application/pdf", "unnamed.pdf"),
        ("..", "application/x-nothing-known", "unnamed"),
        ("nul\x00byte.txt", "text/plain", "nulbyte.txt"),
    ],
)
def test_filenames_keep_only_the_last_component(raw: str | None, mime: str, kept: str) -> None:
    assert wire.clean_filename(raw, mime) == kept


def test_a_filename_over_500_characters_is_refused() -> None:
    with pytest.raises(ApiError, match="at most 500 characters"):
        wire.clean_filename("a" * 501, "text/plain")


@pytest.mark.parametrize(
    ("head", "declared", "name", "mime"),
    [
        (b"%PDF-1.7 ...", "application/octet-stream", "x.bin", "application/pdf"),
        (b"\x89PNG\r\n\x1a\n....", None, "x", "image/png"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "text/plain", "x.txt", "image/webp"),  # the bytes win
        (b"a,b\n", "application/octet-stream", "t.csv", "text/csv"),
        (b"plain words", None, "", "text/plain"),
        (b"\xff\xfe\x00garbage\x80", None, "", "application/octet-stream"),
        (b"caf\xc3", None, "", "text/plain"),  # a character cut at the end of the sample
    ],
)
def test_mime_types_come_from_bytes_then_declaration_then_name(head: bytes, declared: str | None, name: str, mime: str) -> None:
    assert wire.sniff_mime(head, declared, name) == mime


def test_page_cursors_round_trip_and_refuse_junk() -> None:
    token = wire.page_token("file_011abc")
    assert token.startswith("page_") and wire.parse_page_token(token) == "file_011abc"
    for junk in ("nope", "page_!!!", wire.page_token("msgbatch_x")):
        with pytest.raises(ApiError, match="page: Invalid page cursor"):
            wire.parse_page_token(junk)


def _check(data: bytes, *, pieces: int = 1, max_lines: int = 100, max_line: int = 1000) -> wire.JsonlChecker:
    checker = wire.JsonlChecker(max_lines, max_line)
    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        checker.feed(data[start : start + step])
    checker.finish()
    return checker


@pytest.mark.parametrize("pieces", [1, 3, 17])
def test_jsonl_lines_are_checked_across_chunk_edges(pieces: int) -> None:
    good = b'{"a": 1}\n\n{"b": [1, 2, 3]}\n{"c": "no newline at the end"}'
    checker = _check(good, pieces=pieces)
    assert checker.problem() is None and checker.lines == 3
    bad = _check(b'{"a": 1}\n[1]\n"s"\n{broken\n', pieces=pieces).problem()
    assert bad is not None and bad.code == "invalid_file_format" and bad.param == "file"
    assert "line 2: not a JSON object (a list)" in bad.message
    assert "line 3: not a JSON object (a str)" in bad.message
    assert "line 4: not valid JSON" in bad.message


def test_jsonl_limits_on_lines_and_line_length() -> None:
    assert "more than 2 lines" in _check(b"{}\n{}\n{}\n", max_lines=2).problem().message
    assert "line 2: longer than 10 bytes" in _check(b'{}\n{"long": "xxxxxxxx"}\n', max_line=10, pieces=5).problem().message
    assert "no lines" in _check(b"\n\n").problem().message


def test_file_errors_carry_the_sdk_error_code_and_an_openai_form() -> None:
    expired = wire.FileExpired("file_x")
    body = expired.envelope("req_1")
    assert body["error"]["type"] == "not_found_error" and body["error"]["details"] == {"error_code": "file_expired"}
    assert expired.status == 404
    assert expired.openai().openai_envelope()["error"]["code"] == "file_expired"
    missing = wire.FileNotFound("file_y")
    assert "details" not in missing.envelope(None)["error"]
    assert missing.openai().openai_envelope() == {
        "error": {"message": "No such File object: file_y", "type": "invalid_request_error", "param": "id", "code": None}
    }
    assert wire.FileTooLarge(10).headers["connection"] == "close"


def test_backends_take_what_they_can() -> None:
    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

    assert targets_of(Named("anthropic")) == FileTargets(pdf=True, images=True)
    assert targets_of(Named("openai")) == FileTargets(pdf=False, images=True)
    assert targets_of(Named("something-new")) == TEXT_ONLY
    from batchyard.backends.registry import BACKENDS

    assert set(BACKEND_TARGETS) == set(BACKENDS)  # a new backend says what it takes
