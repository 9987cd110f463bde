"""The Files APIs with the official clients, on both databases: Anthropic's (``client.beta.files``
and ``client.files``, strict) and OpenAI's (``client.files``) on the same paths and store;
file_id sources in messages, resolved for the backend they go to; workspaces kept apart;
bad uploads refused with nothing stored."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import anthropic
import httpx
import openai
import orjson
import pytest

from support.databases import BACKENDS, dispose, new_database, query
from support.files import tiny_pdf, tiny_png
from support.helpers import make_client, make_key
from support.recording_upstream import RecordingUpstream
from support.server import ServerProcess

MiB = 1024 * 1024
PDF_TEXT = "Quarterly figures: revenue rose by nine percent"
NOTES = b"The launch code is pelican. Remember it.\n"

CONFIG = """
[limits]
body_timeout = 2

[files]
max_file_bytes = 4194304
max_workspace_bytes = 6291456
batch_max_lines = 50

[[models]]
id = "rec-openai"
backend = "openai"
base_url = "{upstream}/v1"

[[models]]
id = "rec-anthropic"
backend = "anthropic"
base_url = "{upstream}"

[[models]]
id = "*"
backend = "simulator"
"""



@dataclass
class Deployment:
    server: ServerProcess
    database_url: str
    upstream: RecordingUpstream
    keys: dict[str, str]

    def anthropic(self, workspace: str = "alpha") -> anthropic.Anthropic:
        return make_client(self.server.url, api_key=self.keys[workspace])

    def openai(self, workspace: str = "alpha") -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.server.url}/v1", api_key=self.keys[workspace], max_retries=0, _strict_response_validation=True
        )

    def stored(self, workspace: str) -> int:
        """Rows of this workspace's files in any state, uploads in progress included."""
        return query(self.database_url, "SELECT count(*) FROM files WHERE workspace_id = $1", workspace)[0][0]

    def orphan_chunks(self) -> int:
        return query(
            self.database_url,
            "SELECT count(*) FROM file_chunks c WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.id = c.file_id)",
        )[0][0]


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("files")
    url = new_database(request.param, workdir)
    upstream = RecordingUpstream().start()
    keys = {name: make_key(name, url, workdir) for name in ("alpha", "beta", "quota", "limits")}
    workspace_ids = dict(query(url, "SELECT name, id FROM workspaces"))
    server = ServerProcess(url, config_text=CONFIG.format(upstream=upstream.url), workdir=workdir)
    server.start()
    deployment = Deployment(server, url, upstream, keys)
    deployment.workspace_ids = workspace_ids  # type: ignore[attr-defined]
    yield deployment
    server.stop()
    upstream.stop()
    dispose(url)


def ws(deployment: Deployment, name: str) -> str:
    return deployment.workspace_ids[name]  # type: ignore[attr-defined]


# -- Anthropic's Files API ---------------------------------------------------------


def test_anthropic_sdk_beta_and_ga_files(deployment: Deployment) -> None:
    client = deployment.anthropic()
    uploaded = client.beta.files.upload(file=("notes.txt", NOTES, "text/plain"), betas=["files-api-2025-04-14"])
    assert uploaded.id.startswith("file_") and uploaded.type == "file"
    assert (uploaded.filename, uploaded.mime_type, uploaded.size_bytes) == ("notes.txt", "text/plain", len(NOTES))
    assert uploaded.downloadable is False and uploaded.expires_at is None
    pdf = client.files.upload(file=("report.pdf", tiny_pdf(PDF_TEXT), "application/pdf"), expires_in_seconds=7200)
    assert pdf.mime_type == "application/pdf"
    assert pdf.expires_at is not None and 7190 <= (pdf.expires_at - pdf.created_at).total_seconds() <= 7210
    third = client.files.upload(file=("third.txt", b"three", "text/plain"))

    # Newest first; the 2.x SDK pages with next_page, older ones with after_id.
    assert [f.id for f in client.files.list(limit=1)] == [third.id, pdf.id, uploaded.id]
    page = client.beta.files.list(limit=2)
    assert [f.id for f in page.data] == [third.id, pdf.id] and page.next_page
    with httpx.Client(base_url=deployment.server.url, headers=_anthropic_headers(deployment)) as http:
        body = http.get("/v1/files", params={"limit": 2, "after_id": pdf.id}).json()
        assert [f["id"] for f in body["data"]] == [uploaded.id] and body["has_more"] is False
        body = http.get("/v1/files", params={"limit": 1, "before_id": uploaded.id}).json()
        assert [f["id"] for f in body["data"]] == [pdf.id] and body["has_more"] is True
    assert [f.id for f in client.files.list(ids=[uploaded.id, "file_unknown"])] == [uploaded.id]

    meta = client.beta.files.retrieve_metadata(uploaded.id)
    assert meta.id == uploaded.id and meta.size_bytes == len(NOTES)
    assert client.files.retrieve_metadata(pdf.id).filename == "report.pdf"

    # Uploads are not downloadable on the real API, and not here.
    with pytest.raises(anthropic.types.FileNotDownloadableError) as refused:
        client.beta.files.download(uploaded.id)
    assert refused.value.status_code == 400 and refused.value.error_code == "file_not_downloadable"

    for file in (uploaded, pdf, third):
        deleted = client.beta.files.delete(file.id)
        assert deleted.id == file.id and deleted.type == "file_deleted"
    with pytest.raises(anthropic.NotFoundError) as gone:
        client.files.retrieve_metadata(uploaded.id)
    assert gone.value.body["error"]["type"] == "not_found_error"
    assert list(client.files.list()) == []


def _anthropic_headers(deployment: Deployment, workspace: str = "alpha") -> dict[str, str]:
    return {"x-api-key": deployment.keys[workspace], "anthropic-version": "2023-06-01"}


# -- OpenAI's /v1/files ------------------------------------------------------------


def test_openai_sdk_files(deployment: Deployment) -> None:
    client = deployment.openai()
    lines = b"".join(
        orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": {}}) + b"\n"
        for i in range(20)
    )
    batch_file = client.files.create(file=("input.jsonl", lines), purpose="batch")
    assert batch_file.object == "file" and batch_file.purpose == "batch" and batch_file.bytes == len(lines)
    assert batch_file.status == "processed" and batch_file.status_details is None
    assert batch_file.expires_at == batch_file.created_at + 30 * 86400  # batch files expire after 30 days
    data = client.files.create(
        file=("data.txt", b"user data"), purpose="user_data", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert data.expires_at == data.created_at + 3600

    assert [f.id for f in client.files.list()] == [data.id, batch_file.id]
    assert [f.id for f in client.files.list(order="asc")] == [batch_file.id, data.id]
    assert [f.id for f in client.files.list(purpose="batch")] == [batch_file.id]
    first = client.files.list(limit=1)
    assert [f.id for f in first.data] == [data.id] and first.has_more
    assert [f.id for f in first.get_next_page().data] == [batch_file.id]

    assert client.files.retrieve(batch_file.id).bytes == len(lines)
    assert client.files.content(batch_file.id).content == lines
    deleted = client.files.delete(batch_file.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (batch_file.id, "file", True)
    with pytest.raises(openai.NotFoundError) as gone:
        client.files.retrieve(batch_file.id)
    assert gone.value.body == {
        "message": f"No such File object: {batch_file.id}",
        "type": "invalid_request_error",
        "param": "id",
        "code": None,
    }
    client.files.delete(data.id)


def test_openai_purpose_checks(deployment: Deployment) -> None:
    client = deployment.openai()
    with pytest.raises(openai.BadRequestError) as bad_purpose:
        client.files.create(file=("x.txt", b"x"), purpose="nonsense")  # type: ignore[arg-type]
    assert bad_purpose.value.body["param"] == "purpose"
    with httpx.Client(base_url=deployment.server.url, headers={"authorization": f"Bearer {deployment.keys['alpha']}"}) as http:
        missing = http.post("/v1/files", files={"file": ("x.txt", b"x")})
        assert missing.status_code == 400
        assert missing.json()["error"]["message"] == "Missing required parameter: 'purpose'."
    assert deployment.stored(ws(deployment, "alpha")) == 0


def test_batch_jsonl_refused_with_line_numbers(deployment: Deployment) -> None:
    client = deployment.openai()
    bad = b'{"custom_id": "a"}\n[1, 2]\n\nnot json\n{"custom_id": "b"}\n'
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("input.jsonl", bad), purpose="batch")
    message = refused.value.body["message"]
    assert "line 2: not a JSON object" in message and "line 4: not valid JSON" in message
    assert refused.value.body["code"] == "invalid_file_format"
    too_many = b"".join(b'{"n": %d}\n' % i for i in range(51))
    with pytest.raises(openai.BadRequestError) as long_file:
        client.files.create(file=("input.jsonl", too_many), purpose="batch")
    assert "more than 50 lines" in long_file.value.body["message"]
    # The purpose after the file (curl can send it so): checked from the store instead.
    boundary = "purposelast"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="late.jsonl"\r\n\r\n'
        f"[]\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}--\r\n"
    ).encode()
    with httpx.Client(base_url=deployment.server.url) as http:
        late = http.post(
            "/v1/files",
            content=body,
            headers={"authorization": f"Bearer {deployment.keys['alpha']}", "content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert late.status_code == 400 and "line 1: not a JSON object" in late.json()["error"]["message"]
    assert deployment.stored(ws(deployment, "alpha")) == 0
    assert deployment.orphan_chunks() == 0


# -- one store, two views ----------------------------------------------------------


def test_a_file_through_the_other_api(deployment: Deployment) -> None:
    claude, gpt = deployment.anthropic(), deployment.openai()
    from_anthropic = claude.files.upload(file=("notes.txt", NOTES, "text/plain"))
    seen = gpt.files.retrieve(from_anthropic.id)
    assert (seen.purpose, seen.bytes, seen.filename) == ("user_data", len(NOTES), "notes.txt")
    with pytest.raises(openai.BadRequestError) as refused:
        gpt.files.content(from_anthropic.id)
    assert refused.value.body["code"] == "file_not_downloadable"

    from_openai = gpt.files.create(file=("table.csv", b"a,b\n1,2\n"), purpose="user_data")
    meta = claude.files.retrieve_metadata(from_openai.id)
    assert meta.mime_type == "text/csv" and meta.downloadable is True
    assert claude.files.download(from_openai.id).read() == b"a,b\n1,2\n"
    assert {f.id for f in claude.files.list()} == {f.id for f in gpt.files.list()} == {from_anthropic.id, from_openai.id}
    gpt.files.delete(from_anthropic.id)
    claude.files.delete(from_openai.id)


# -- workspaces --------------------------------------------------------------------


def test_other_workspaces_get_404_everywhere(deployment: Deployment) -> None:
    mine = deployment.anthropic("alpha").files.upload(file=("secret.txt", b"alpha only", "text/plain"))
    other_claude, other_gpt = deployment.anthropic("beta"), deployment.openai("beta")
    for call in (
        lambda: other_claude.files.retrieve_metadata(mine.id),
        lambda: other_claude.beta.files.download(mine.id),
        lambda: other_claude.files.delete(mine.id),
        lambda: other_claude.messages.create(
            model="sim-x", max_tokens=16,
            messages=[{"role": "user", "content": [{"type": "document", "source": {"type": "file", "file_id": mine.id}}]}],
        ),
    ):
        with pytest.raises(anthropic.NotFoundError):
            call()
    for call in (
        lambda: other_gpt.files.retrieve(mine.id),
        lambda: other_gpt.files.content(mine.id),
        lambda: other_gpt.files.delete(mine.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert list(other_claude.files.list()) == [] and list(other_gpt.files.list()) == []
    assert deployment.anthropic("alpha").files.retrieve_metadata(mine.id).filename == "secret.txt"
    deployment.anthropic("alpha").files.delete(mine.id)


# -- bad uploads -------------------------------------------------------------------


def test_an_upload_over_the_limit_is_refused_while_it_streams(deployment: Deployment) -> None:
    workspace = ws(deployment, "limits")
    client = deployment.anthropic("limits")
    with pytest.raises(anthropic.APIStatusError) as declared:
        client.files.upload(file=("big.bin", b"x" * (6 * MiB), "application/octet-stream"))
    assert declared.value.status_code == 413
    # No Content-Length: the limit is found while the bytes arrive, and the answer goes
    # out at once (the connection closes; the client stops sending).
    status = _send_raw_upload(deployment, "limits", total=8 * MiB, declare_length=False)
    assert status == 413
    assert deployment.stored(workspace) == 0 and deployment.orphan_chunks() == 0


def _send_raw_upload(deployment: Deployment, workspace: str, *, total: int, declare_length: bool) -> int:
    """Stream an upload chunk by chunk over a raw socket; the status the server answered."""
    boundary = "rawupload"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", deployment.server.port), timeout=30)
    try:
        request = (
            f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {deployment.keys[workspace]}\r\n"
            f"anthropic-version: 2023-06-01\r\ncontent-type: multipart/form-data; boundary={boundary}\r\n"
            "transfer-encoding: chunked\r\n\r\n"
        ).encode()
        sock.sendall(request)
        piece = b"y" * (256 * 1024)
        sent = 0
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        sock.setblocking(True)
        while sent < total:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
            sock.settimeout(0.01)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break  # the server has answered
            except (TimeoutError, BlockingIOError):
                pass
            finally:
                sock.settimeout(30)
        assert sent < total, "the server read the whole oversized body before answering"
        status_line = sock.makefile("rb").readline()
        return int(status_line.split()[1])
    finally:
        sock.close()


def test_a_workspace_over_its_quota_stores_nothing(deployment: Deployment) -> None:
    workspace = ws(deployment, "quota")
    client = deployment.anthropic("quota")
    kept = client.files.upload(file=("a.bin", b"a" * (3 * MiB), "application/octet-stream"))
    with pytest.raises(anthropic.types.StorageQuotaExceededError):
        client.files.upload(file=("b.bin", b"b" * (3 * MiB + 512 * 1024), "application/octet-stream"))
    with pytest.raises(openai.BadRequestError) as through_openai:
        deployment.openai("quota").files.create(file=("c.bin", b"c" * (3 * MiB + 512 * 1024)), purpose="user_data")
    assert through_openai.value.body["code"] == "storage_quota_exceeded"
    assert deployment.stored(workspace) == 1 and deployment.orphan_chunks() == 0
    client.files.delete(kept.id)
    assert client.files.upload(file=("b.bin", b"b" * (3 * MiB + 512 * 1024), "application/octet-stream")).size_bytes


def test_a_truncated_multipart_body_stores_nothing(deployment: Deployment) -> None:
    workspace = ws(deployment, "alpha")
    boundary = "cutshort"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.txt"\r\n\r\n'.encode()
        + b"z" * (2 * MiB)  # more than one chunk reaches the store before the body ends
    )
    with httpx.Client(base_url=deployment.server.url, headers=_anthropic_headers(deployment)) as http:
        cut = http.post("/v1/files", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert cut.status_code == 400
        assert cut.json()["error"]["message"] == "The multipart body ended before its closing boundary; nothing was stored"
        no_file = http.post("/v1/files", files={"other": ("x.txt", b"x")})
        assert no_file.status_code == 400 and no_file.json()["error"]["message"] == "file: Field required"
        not_multipart = http.post("/v1/files", content=b"{}", headers={"content-type": "application/json"})
        assert not_multipart.status_code == 400
    assert deployment.stored(workspace) == 0 and deployment.orphan_chunks() == 0


def test_filenames_are_data_not_paths(deployment: Deployment) -> None:
    client = deployment.openai()
    names = {
        "../../etc/passwd": "passwd",
        "C:\\Users\\me\\report.txt": "report.txt",
        "résumé 2026.txt": "résumé 2026.txt",
        "semi;colon, comma.txt": "semi;colon, comma.txt",
    }
    for sent, kept in names.items():
        file = client.files.create(file=(sent, b"data"), purpose="user_data")
        assert file.filename == kept
        with httpx.Client(base_url=deployment.server.url, headers={"authorization": f"Bearer {deployment.keys['alpha']}"}) as http:
            download = http.get(f"/v1/files/{file.id}/content")
        assert download.content == b"data"
        assert download.headers["content-disposition"].startswith("attachment; filename*=utf-8''")
        assert ";" not in download.headers["content-disposition"].split("''", 1)[1]  # the name cannot add parameters
        client.files.delete(file.id)
    unnamed = deployment.anthropic().files.upload(file=("", b"plain words", "text/plain"))
    assert unnamed.filename == "unnamed.txt"
    deployment.anthropic().files.delete(unnamed.id)


# -- file_id in messages -----------------------------------------------------------


def _doc(file_id: str) -> dict[str, object]:
    return {"type": "document", "source": {"type": "file", "file_id": file_id}}


def test_messages_resolve_files_for_each_backend(deployment: Deployment) -> None:
    claude = deployment.anthropic()
    notes = claude.files.upload(file=("notes.txt", NOTES, "text/plain"))
    pdf = claude.files.upload(file=("report.pdf", tiny_pdf(PDF_TEXT), "application/pdf"))
    png = claude.files.upload(file=("dot.png", tiny_png(), "image/png"))
    image = {"type": "image", "source": {"type": "file", "file_id": png.id}}
    content = [_doc(notes.id), _doc(pdf.id), image, {"type": "text", "text": "Summarize."}]

    # The simulator reads the text document: the count grows with the file's words.
    plain = claude.messages.count_tokens(model="sim-x", messages=[{"role": "user", "content": "Summarize."}])
    with_file = claude.messages.count_tokens(model="sim-x", messages=[{"role": "user", "content": [_doc(notes.id), {"type": "text", "text": "Summarize."}]}])
    assert with_file.input_tokens >= plain.input_tokens + len(NOTES.split())
    assert claude.messages.create(model="sim-x", max_tokens=16, messages=[{"role": "user", "content": content}]).content

    # openai backend: text stays text, the PDF becomes its text, the image a data URL.
    claude.messages.create(model="rec-openai", max_tokens=16, messages=[{"role": "user", "content": content}])
    parts = deployment.upstream.recorded("/chat/completions")[-1]["messages"][-1]["content"]
    texts = " ".join(p["text"] for p in parts if p["type"] == "text")
    assert NOTES.decode().strip() in texts and PDF_TEXT in texts
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 1 and urls[0].startswith("data:image/png;base64,")

    # anthropic backend: the PDF and the image go as base64, the text file as a text source.
    claude.messages.create(model="rec-anthropic", max_tokens=16, messages=[{"role": "user", "content": content}])
    sent = deployment.upstream.recorded("/v1/messages")[-1]["messages"][-1]["content"]
    assert sent[0]["source"] == {"type": "text", "media_type": "text/plain", "data": NOTES.decode()}
    assert sent[1]["source"]["type"] == "base64" and sent[1]["source"]["media_type"] == "application/pdf"
    assert sent[2]["source"]["type"] == "base64" and sent[2]["source"]["media_type"] == "image/png"

    with pytest.raises(anthropic.NotFoundError) as unknown:
        claude.messages.create(model="sim-x", max_tokens=16, messages=[{"role": "user", "content": [_doc("file_011nosuchfile")]}])
    assert unknown.value.body["error"]["message"] == "File not found: file_011nosuchfile"
    with pytest.raises(anthropic.BadRequestError) as wrong_kind:
        claude.messages.create(model="sim-x", max_tokens=16, messages=[{"role": "user", "content": [_doc(png.id)]}])
    assert "document blocks take PDF and plain-text files" in wrong_kind.value.body["error"]["message"]
    for file in (notes, pdf, png):
        claude.files.delete(file.id)
