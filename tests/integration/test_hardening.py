"""Defects found from outside, each pinned: oversized headers, broken surrogates, deep
nesting, NUL in a model name, open mode reached by a foreign name or page, HTTP/1.0
downloads, 405s, echoed input, repeated keys, odd Range headers."""

from __future__ import annotations

import json
import socket

import orjson

from support.helpers import make_client, raw, simple_params, wait_for_end
from support.server import ServerProcess


def exchange(server: ServerProcess, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(request)
        reply = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            reply += chunk
    return reply


def test_request_headers_are_bounded(server: ServerProcess) -> None:
    huge = b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nx-filler: " + b"a" * 70_000 + b"\r\n\r\n"
    reply = exchange(server, huge)
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert b"connection: close" in reply.lower()
    many = b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n" + b"".join(b"x-h%d: 1\r\n" % i for i in range(150)) + b"\r\n"
    assert exchange(server, many).startswith(b"HTTP/1.1 431 ")
    with raw(server.url) as http:
        assert http.get("/v1/models").status_code == 200  # and the server is fine


SURROGATE = rb'"\ud800"'


def _surrogate_error(response) -> str:  # noqa: ANN001
    assert response.status_code == 400, response.text
    assert response.headers["x-should-retry"] == "false"
    body = response.json()
    assert body["error"]["type"] == "invalid_request_error"
    return body["error"]["message"]


def test_a_lone_surrogate_is_the_same_400_everywhere(server: ServerProcess) -> None:
    message = b'{"model": "claude-sim", "max_tokens": 8, "messages": [{"role": "user", "content": ' + SURROGATE + b"}]}"
    counting = b'{"model": "claude-sim", "messages": [{"role": "user", "content": ' + SURROGATE + b"}]}"
    user_id = (
        b'{"model": "claude-sim", "max_tokens": 8, "metadata": {"user_id": ' + SURROGATE + b'},'
        b' "messages": [{"role": "user", "content": "hi"}]}'
    )
    batch = b'{"requests": [{"custom_id": "s", "params": ' + message + b"}]}"
    with raw(server.url) as http:
        for path, body in (
            ("/v1/messages", message),
            ("/v1/messages/count_tokens", counting),
            ("/v1/messages", user_id),
            ("/v1/messages/batches", batch),
        ):
            found = _surrogate_error(http.post(path, content=body, headers={"content-type": "application/json"}))
            assert found.startswith("The request body is not valid JSON: no low surrogate in string: line 1 column"), (path, found)


def nested(depth: int) -> dict[str, object]:
    schema: dict[str, object] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def test_deep_nesting_is_a_400_on_every_surface(server: ServerProcess) -> None:
    tool = {"name": "deep", "input_schema": nested(300)}
    params = {**simple_params("go"), "tools": [tool]}
    expected = "The request is nested too deeply: at most 200 levels of objects and arrays are allowed"
    with raw(server.url) as http:
        for path, body in (("/v1/messages", params), ("/v1/messages/count_tokens", {k: v for k, v in params.items() if k != "max_tokens"})):
            response = http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
            assert response.status_code == 400, response.text
            assert response.json()["error"]["message"] == expected
    client = make_client(server.url)
    created = client.messages.batches.create(requests=[{"custom_id": "deep", "params": params}])
    wait_for_end(client, created.id)
    (line,) = list(client.messages.batches.results(created.id))
    assert line.result.type == "errored"
    assert line.result.error.error.message == expected


def test_a_nul_in_a_model_name_errors_that_line_only(server: ServerProcess) -> None:
    client = make_client(server.url)
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": "nul", "params": simple_params(model="claude\u0000sim")},
            {"custom_id": "fine", "params": simple_params()},
        ]
    )
    wait_for_end(client, batch.id)
    results = {line.custom_id: line.result for line in client.messages.batches.results(batch.id)}
    assert results["fine"].type == "succeeded"
    assert results["nul"].type == "errored" and results["nul"].error.error.type == "not_found_error"


def test_open_mode_answers_only_its_own_names_and_pages(server: ServerProcess) -> None:
    with raw(server.url) as http:
        for host in ("attacker.example", f"attacker.example:{server.port}", "localhost.attacker.example"):
            refused = http.get("/v1/messages/batches", headers={"host": host})
            assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error", host
        foreign = http.post(
            "/v1/messages/batches",
            headers={"origin": "http://attacker.example"},
            json={"requests": [{"custom_id": "x", "params": simple_params()}]},
        )
        assert foreign.status_code == 403
        assert "other origins" in foreign.json()["error"]["message"]
        assert http.get("/v1/models", headers={"host": f"localhost:{server.port}"}).status_code == 200
        own = http.get("/v1/models", headers={"origin": f"http://127.0.0.1:{server.port}"})
        assert own.status_code == 200


def test_http_1_0_downloads_are_not_chunked(server: ServerProcess) -> None:
    client = make_client(server.url)
    batch = client.messages.batches.create(requests=[{"custom_id": f"h{i}", "params": simple_params()} for i in range(3)])
    wait_for_end(client, batch.id)
    head = f"GET /v1/messages/batches/{batch.id}/results HTTP/1.0\r\nhost: 127.0.0.1\r\n"
    reply = exchange(server, (head + "x-api-key: k\r\nanthropic-version: 2023-06-01\r\n\r\n").encode())
    headers, _, payload = reply.partition(b"\r\n\r\n")
    assert headers.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in headers.lower()
    lines = payload.splitlines()
    assert sorted(orjson.loads(line)["custom_id"] for line in lines) == ["h0", "h1", "h2"]


def test_405s_name_every_allowed_method(server: ServerProcess) -> None:
    with raw(server.url) as http:
        listing = http.put("/v1/messages/batches")
        assert listing.status_code == 405 and listing.headers["allow"] == "GET, HEAD, POST"
        one = http.patch("/v1/messages/batches/msgbatch_01AAAAAAAAAAAAAAAAAAAAAA")
        assert one.status_code == 405 and one.headers["allow"] == "DELETE, GET, HEAD"
        assert one.json()["error"]["type"] == "invalid_request_error"


def test_error_messages_quote_input_within_bounds(server: ServerProcess) -> None:
    key = "k" * 1_000_000
    with raw(server.url) as http:
        response = http.post("/v1/messages/batches", content=orjson.dumps({key: 1, "requests": []}))
        assert response.status_code == 400
        assert len(response.json()["error"]["message"]) <= 1024
        message = http.post("/v1/messages", json={**simple_params(), key: 1})
        assert message.status_code == 400 and len(message.json()["error"]["message"]) <= 1024


def test_a_repeated_key_is_the_last_one_everywhere(server: ServerProcess) -> None:
    with raw(server.url) as http:
        last_good = b'{"model": "claude-sim", "max_tokens": -1, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}'
        assert http.post("/v1/messages", content=last_good).status_code == 200
        last_bad = b'{"model": "claude-sim", "max_tokens": 8, "max_tokens": -1, "messages": [{"role": "user", "content": "hi"}]}'
        assert http.post("/v1/messages", content=last_bad).status_code == 400
        twice = b'{"requests": [{"custom_id": "a", "params": {}}], "requests": [{"custom_id": "b", "params": {}}]}'
        refused = http.post("/v1/messages/batches", content=twice)
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == "requests: the key appears more than once; send one list of requests"
    client = make_client(server.url)
    line = b'{"custom_id": "dup", "params": ' + last_good + b"}"
    with raw(server.url) as http:
        created = http.post("/v1/messages/batches", content=b'{"requests": [' + line + b"]}").json()
    wait_for_end(client, created["id"])
    (result,) = list(client.messages.batches.results(created["id"]))
    assert result.result.type == "succeeded"  # max_tokens 8, the last one, was used


def test_an_inverted_range_on_a_console_file_is_ignored(server: ServerProcess) -> None:
    with raw(server.url) as http:
        whole = http.get("/console/static/app.js")
        odd = http.get("/console/static/app.js", headers={"range": "bytes=10-5"})
        assert odd.status_code == 200 and odd.content == whole.content
        part = http.get("/console/static/app.js", headers={"range": "bytes=0-9"})
        assert part.status_code == 206 and part.content == whole.content[:10]


def test_nothing_after_a_431_is_read_as_a_request(server: ServerProcess) -> None:
    """A 431 closes the connection: what was sent after the oversized headers is dropped."""
    follow = b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
    huge = b"POST /v1/messages/batches HTTP/1.1\r\nhost: 127.0.0.1\r\nx-filler: " + b"a" * 70_000 + b"\r\n\r\n" + follow
    reply = exchange(server, huge)
    assert reply.startswith(b"HTTP/1.1 431 ") and reply.count(b"HTTP/1.1 ") == 1
