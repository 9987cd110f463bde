"""Create-time validation and hostile input on the batch endpoints: each case gets the
Anthropic envelope with the exact message, and nothing of a refused batch is stored."""

from __future__ import annotations

import json
import socket

import anthropic
import httpx
import orjson
import pytest

from support.helpers import HEADERS, batch_routes, raw, simple_params

PATTERN_ERROR = "String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"


def one(custom_id: object = "a", params: object = None) -> dict[str, object]:
    return {"custom_id": custom_id, "params": simple_params() if params is None else params}


def json_error(data: bytes) -> str:
    """What Python's own parser says about a whole document."""
    try:
        json.loads(data)
    except json.JSONDecodeError as exc:
        return str(exc)
    raise AssertionError("valid JSON")


def body_of(*items: object) -> bytes:
    return orjson.dumps({"requests": list(items)})


CASES = [
    (b"this is not json", "The request body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    (b"", "The request body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    (b'{"requests": [', "The request body is not valid JSON: Expecting value: line 1 column 15 (char 14)"),
    (b'{"requests": []} trailing', "The request body is not valid JSON: Extra data: line 1 column 18 (char 17)"),
    (b"[1, 2]", "Input should be a valid dictionary or object to extract fields from"),
    (b'"text"', "Input should be a valid dictionary or object to extract fields from"),
    (b"{}", "requests: Field required"),
    (b'{"requests": {"custom_id": "a"}}', "requests: Input should be a valid list"),
    (b'{"requests": "nope"}', "requests: Input should be a valid list"),
    (b'{"requests": []}', "requests: List should have at least 1 item after validation, not 0"),
    (body_of({"params": simple_params()}), "requests.0.custom_id: Field required"),
    (body_of(one("a" * 65)), "requests.0.custom_id: String should have at most 64 characters"),
    (body_of(one("")), "requests.0.custom_id: String should have at least 1 character"),
    (body_of(one("a/b")), f"requests.0.custom_id: {PATTERN_ERROR}"),
    (body_of(one("has space")), f"requests.0.custom_id: {PATTERN_ERROR}"),
    (body_of(one("héllo")), f"requests.0.custom_id: {PATTERN_ERROR}"),
    (body_of(one("../etc")), f"requests.0.custom_id: {PATTERN_ERROR}"),
    (body_of(one("x'; DROP TABLE batches;--")), f"requests.0.custom_id: {PATTERN_ERROR}"),
    (body_of(one(42)), "requests.0.custom_id: Input should be a valid string"),
    (body_of(one("ok"), one("b/ad")), f"requests.1.custom_id: {PATTERN_ERROR}"),
    (body_of({"custom_id": "a"}), "requests.0.params: Field required"),
    (body_of(one("a", "not an object")), "requests.0.params: Input should be a valid dictionary"),
    (body_of(one("a", [1, 2])), "requests.0.params: Input should be a valid dictionary"),
    (body_of(7), "requests.0: Input should be a valid dictionary or object to extract fields from"),
    (body_of({**one("a"), "extra": 1}), "requests.0.extra: Extra inputs are not permitted"),
    (orjson.dumps({"requests": [one("a")], "other": 1}), "other: Extra inputs are not permitted"),
    (
        body_of(one("dup"), one("x"), one("dup")),
        "requests: custom_id's must be unique within a batch. Duplicate custom_id found: dup",
    ),
    # A later syntax error wins over an earlier field error, like a whole-body parse.
    (body_of(one("a/b"))[:-2] + b",}", f"The request body is not valid JSON: {json_error(body_of(one('a/b'))[:-2] + b',}')}"),
    (b'{"requests": [{"custom_id": "a", "params": {"x": NaN}}]}', None),
]


def _batch_count(http: httpx.Client) -> int:
    return len(http.get("/v1/messages/batches", params={"limit": 1000}).json()["data"])


@pytest.mark.parametrize(("body", "message"), CASES)
def test_create_refuses_bad_envelopes(server, body: bytes, message: str | None) -> None:
    with raw(server.url) as http:
        before = _batch_count(http)
        response = http.post("/v1/messages/batches", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-should-retry"] == "false"
        payload = response.json()
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"
        assert payload["request_id"] == response.headers["request-id"]
        if message is not None:
            assert payload["error"]["message"] == message
        else:
            assert payload["error"]["message"].startswith("The request body is not valid JSON: ")
        assert _batch_count(http) == before  # nothing written


def test_over_the_request_limit_and_at_it(server) -> None:
    tiny = {"model": "claude-sim", "max_tokens": 1, "messages": []}
    too_many = orjson.dumps({"requests": [{"custom_id": f"r{i}", "params": tiny} for i in range(100_001)]})
    with raw(server.url) as http:
        before = _batch_count(http)
        response = http.post("/v1/messages/batches", content=too_many)
        assert response.status_code == 400
        assert response.json()["error"]["message"] == (
            "requests: List should have at most 100000 items after validation, not 100001"
        )
        assert _batch_count(http) == before


def test_sdk_sees_create_errors_as_bad_request(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.batches.create(requests=[one("dup"), one("dup")])
    assert err.value.body["error"]["message"].endswith("Duplicate custom_id found: dup")
    assert err.value.request_id and err.value.request_id.startswith("req_")


def test_body_over_the_byte_limit_is_refused_before_it_is_read(server) -> None:
    """A declared 257 MB body gets 413 at once, without the server reading it."""
    size = 257 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = (
            "POST /v1/messages/batches HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"x-api-key: k\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
            f"content-length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"requests": [')
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
    body = orjson.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["error"] == {"type": "request_too_large", "message": "Request exceeds the maximum size of 268435456 bytes"}


def test_streamed_body_over_the_limit_is_cut_off(server) -> None:
    """Without a content-length, the server stops at the cap, not at the end of the body."""
    sent = 0

    def chunks():
        nonlocal sent
        yield b'{"requests": [{"custom_id": "a", "params": {"pad": "'
        block = b"x" * (1024 * 1024)
        for _ in range(400):  # 400 MB if the server kept reading
            sent += len(block)
            yield block

    try:
        response = httpx.post(
            f"{server.url}/v1/messages/batches", content=chunks(), headers=HEADERS, timeout=120
        )
    except httpx.TransportError:
        response = None  # the server may close the connection while we are still sending
    if response is not None:
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "request_too_large"
    assert sent < 300 * 1024 * 1024


@pytest.mark.parametrize(
    "batch_id",
    [
        "msgbatch_01Kk2gPdvEq73ifNWGPfvmyd",  # well-formed, unknown
        "nope",
        "msgbatch_'; DROP TABLE batches;--",
        "..%2F..%2Fetc%2Fpasswd",
        "msgbatch_01Kk2gPdvEq73ifNWGPfvmy%27",
    ],
)
def test_unknown_and_hostile_batch_ids_are_not_found(server, batch_id: str) -> None:
    with raw(server.url) as http:
        for method, path in batch_routes(batch_id):
            response = http.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
            error = response.json()["error"]
            assert error["type"] == "not_found_error"
            assert error["message"] in ("Not found", f"Message Batch {httpx.URL(path).path.split('/')[4]} not found.")


def test_dot_dot_paths_do_not_escape(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"GET /v1/messages/batches/../../../etc/passwd HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"x-api-key: k\r\nanthropic-version: 2023-06-01\r\nconnection: close\r\n\r\n"
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 404")
    assert b'"not_found_error"' in reply and b"root:" not in reply


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": "0"}, "limit: Input should be greater than or equal to 1"),
        ({"limit": "1001"}, "limit: Input should be less than or equal to 1000"),
        ({"limit": "abc"}, "limit: Input should be a valid integer, unable to parse string as an integer"),
        ({"after_id": "nope"}, "after_id: 'nope' is not a Message Batch ID"),
        ({"before_id": "x' OR '1'='1"}, "before_id: \"x' OR '1'='1\" is not a Message Batch ID"),
    ],
)
def test_list_refuses_bad_queries(server, query: dict[str, str], message: str) -> None:
    with raw(server.url) as http:
        response = http.get("/v1/messages/batches", params=query)
    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error", "message": message}


def test_cursor_naming_no_batch_is_a_position(client: anthropic.Anthropic, server) -> None:
    """Ids carry their creation time, so a cursor naming a deleted or unknown batch still
    marks a place in the list instead of failing the page."""
    made = client.messages.batches.create(requests=[one("c")])
    with raw(server.url) as http:
        ghost_newer = "msgbatch_01" + "z" * 22  # after every real id
        ghost_older = "msgbatch_01" + "1" * 22  # before every real id
        page = http.get("/v1/messages/batches", params={"after_id": ghost_newer, "limit": 1000}).json()
        assert made.id in [b["id"] for b in page["data"]]
        assert http.get("/v1/messages/batches", params={"after_id": ghost_older}).json()["data"] == []
        assert made.id in [b["id"] for b in http.get("/v1/messages/batches", params={"before_id": ghost_older, "limit": 1000}).json()["data"]]
