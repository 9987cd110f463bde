"""Small HTTP clients used by ``batchyard batch ...``: one for any Message Batches server,
the official one or batchyard (``x-api-key``, ``anthropic-version: 2023-06-01``; against
batchyard it also reads live progress), and one for any OpenAI Batch API server (a bearer
key, no ``anthropic-version``: on shared paths such as ``/v1/files`` that header would
select Anthropic's API)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from .protocol.batch_create import custom_id_error
from .protocol.errors import ApiError
from .protocol.messages import ModelResolver, validate_message_request
from .protocol.openai_batches import ENDPOINTS, InputReader

API_VERSION = "2023-06-01"
OPENAI_ENDED = ("completed", "failed", "expired", "cancelled")


class ClientError(Exception):
    """An error answer from the server (or no answer at all)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class BadLine:
    number: int
    message: str


class _AnyModel(ModelResolver):
    """Locally every model name is fine: only the server knows its routes."""

    def knows(self, model: str) -> bool:
        return True

    def max_tokens(self, model: str) -> int | None:
        return None


def check_jsonl(path: Path, limit: int = 100_000) -> tuple[int, list[BadLine]]:
    """Check a batch file (one ``{"custom_id", "params"}`` per line) the way the server
    will: the envelope at create time, each ``params`` as a Messages request. Returns the
    number of requests and the bad lines, numbered from 1."""
    bad: list[BadLine] = []
    seen: dict[str, int] = {}
    count = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            count += 1
            try:
                item = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                bad.append(BadLine(number, f"not valid JSON: {exc}"))
                continue
            problem = _line_problem(item, seen, number)
            if problem is not None:
                bad.append(BadLine(number, problem))
    if count == 0:
        bad.append(BadLine(0, "the file holds no requests"))
    elif count > limit:
        bad.append(BadLine(0, f"{count} requests: a batch holds at most {limit}"))
    return count, bad


def file_format(path: Path) -> str:
    """``openai`` when the file's first request is an OpenAI Batch API line
    (``{custom_id, method, url, body}``), else ``anthropic`` (``{custom_id, params}``)."""
    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                try:
                    item = json.loads(raw)
                except (ValueError, RecursionError):
                    return "anthropic"  # (the Message Batches check names the bad line)
                return "openai" if isinstance(item, dict) and ("url" in item or "body" in item) else "anthropic"
    return "anthropic"


def check_openai_jsonl(path: Path, limit: int = 50_000) -> tuple[int, str | None, list[BadLine]]:
    """Check an OpenAI Batch API input file the way the server will when the batch is
    created: every line ``{custom_id, method: "POST", url, body}``, custom ids unique, one
    endpoint for all. Returns the number of requests, the endpoint and the bad lines."""
    reader = InputReader(limit)
    bad: list[BadLine] = []
    endpoints: dict[str, int] = {}
    chunk: list[tuple[int, bytes]] = []

    def read() -> None:
        for line in reader.read(chunk):
            url = json.loads(line.params)["url"]
            endpoints.setdefault(url, line.index)
        chunk.clear()

    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            chunk.append((number, raw))
            if len(chunk) >= 1000:
                read()
    read()
    bad += [BadLine(e["line"] or 0, e["message"]) for e in reader.errors]
    if reader.count == 0:
        bad.append(BadLine(0, "the file holds no requests"))
    endpoint = next(iter(endpoints), None)
    if not bad and len(endpoints) > 1:
        bad.append(BadLine(0, f"the lines target more than one endpoint ({', '.join(endpoints)}); a batch has one"))
    if endpoint is not None and endpoint not in ENDPOINTS:
        bad.append(BadLine(0, f"endpoint {endpoint!r} is not one of {', '.join(ENDPOINTS)}"))
    return reader.count, endpoint, bad


def _line_problem(item: Any, seen: dict[str, int], number: int) -> str | None:
    if not isinstance(item, dict):
        return "each line must be a JSON object with custom_id and params"
    for key in item:
        if key not in ("custom_id", "params"):
            return f"{key}: Extra inputs are not permitted"
    if "custom_id" not in item:
        return "custom_id: Field required"
    problem = custom_id_error(item["custom_id"])
    if problem:
        return f"custom_id: {problem}"
    if item["custom_id"] in seen:
        return f"custom_id {item['custom_id']!r} already used on line {seen[item['custom_id']]}"
    seen[item["custom_id"]] = number
    if "params" not in item:
        return "params: Field required"
    if not isinstance(item["params"], dict):
        return "params: Input should be a valid dictionary"
    try:
        validate_message_request(item["params"], API_VERSION, _AnyModel(), in_batch=True)
    except ApiError as exc:
        return f"params: {exc.message}"
    return None


def request_body(path: Path) -> Iterator[bytes]:
    """The create body, streamed from the file without holding it whole."""
    yield b'{"requests":['
    first = True
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.strip()
            if not line:
                continue
            if not first:
                yield b","
            first = False
            yield line
    yield b"]}"


class _HttpClient:
    def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers={"user-agent": "batchyard-cli", **headers}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = f"{error['type']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {response.status_code}"
            raise ClientError(message, response.status_code)
        return response

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.base_url}: {exc}") from None
        return self._check(response).json()

    def _download(self, path: str, accept: str) -> Iterator[bytes]:
        try:
            with self.http.stream("GET", path, headers={"accept": accept}) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                yield from response.iter_bytes()
        except httpx.HTTPError as exc:
            raise ClientError(f"download failed: {exc}") from None


class BatchClient(_HttpClient):
    """The Message Batches API."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout: float = 60.0) -> None:
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        super().__init__(base_url, headers, timeout)

    def create(self, path: Path) -> dict[str, Any]:
        return self._call(
            "POST", "/v1/messages/batches", content=request_body(path), headers={"content-type": "application/json"}
        )

    def get(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/messages/batches/{_safe(batch_id)}")

    def list(self, limit: int, after_id: str | None = None, before_id: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if after_id:
            params["after_id"] = after_id
        if before_id:
            params["before_id"] = before_id
        return self._call("GET", "/v1/messages/batches", params=params)

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/messages/batches/{_safe(batch_id)}/cancel")

    def delete(self, batch_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/messages/batches/{_safe(batch_id)}")

    def progress(self, batch_id: str) -> dict[str, int] | None:
        """Live counts by state (batchyard only); None from servers without them."""
        try:
            response = self.http.get(f"/console/api/batches/{_safe(batch_id)}/progress")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            return dict(response.json()["by_state"])
        except (ValueError, KeyError, TypeError):
            return None

    def results(self, batch: dict[str, Any]) -> Iterator[bytes]:
        """The results file in chunks. Follows ``results_url`` when it points at the same
        server (the key is never sent elsewhere), else the fixed path."""
        url = batch.get("results_url")
        path = f"/v1/messages/batches/{_safe(batch['id'])}/results"
        if url and _same_origin(url, self.base_url):
            path = url
        return self._download(path, "application/x-jsonl")


class OpenAIBatchClient(_HttpClient):
    """OpenAI's Batch API (and its Files API, for the input and output files)."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout: float = 60.0) -> None:
        super().__init__(base_url, {"authorization": f"Bearer {api_key}"} if api_key else {}, timeout)

    def create(self, path: Path, endpoint: str) -> dict[str, Any]:
        """Upload the file (streamed from disk; ``purpose`` first, so the server checks the
        lines as they arrive), then create the batch from it."""
        with path.open("rb") as handle:
            uploaded = self._call(
                "POST", "/v1/files", data={"purpose": "batch"}, files={"file": (path.name, handle, "application/jsonl")}
            )
        body = {"input_file_id": uploaded["id"], "endpoint": endpoint, "completion_window": "24h"}
        return self._call("POST", "/v1/batches", json=body)

    def get(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/batches/{_safe(batch_id)}")

    def list(self, limit: int, after: str | None = None) -> dict[str, Any]:
        return self._call("GET", "/v1/batches", params={"limit": limit, **({"after": after} if after else {})})

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/batches/{_safe(batch_id)}/cancel")

    def results(self, batch: dict[str, Any]) -> Iterator[bytes]:
        """The output file, then the error file: one line per request."""
        for key in ("output_file_id", "error_file_id"):
            if batch.get(key):
                yield from self._download(f"/v1/files/{_safe(batch[key])}/content", "application/jsonl")


_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def _safe(batch_id: str) -> str:
    if not _ID.match(batch_id):
        raise ClientError(f"not a batch id: {batch_id!r}")
    return batch_id


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)
