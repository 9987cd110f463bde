"""Which API a request came through decides its error envelope and version rules."""

from __future__ import annotations

from starlette.datastructures import Headers

from batchyard.api.surfaces import Surface, surface_for
from batchyard.protocol.errors import ApiError

ANTHROPIC = Headers({"anthropic-version": "2023-06-01"})
OPENAI = Headers({"authorization": "Bearer k"})


def test_openai_only_paths_are_openai_whatever_the_headers() -> None:
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/batches", "/v1/batches/b/cancel"):
        assert surface_for(path, ANTHROPIC) is Surface.OPENAI
        assert surface_for(path, OPENAI) is Surface.OPENAI


def test_files_and_models_are_told_apart_by_the_anthropic_version_header() -> None:
    assert surface_for("/v1/models", ANTHROPIC) is Surface.ANTHROPIC
    assert surface_for("/v1/models/claude-opus-5", OPENAI) is Surface.OPENAI
    assert surface_for("/v1/files", ANTHROPIC) is Surface.ANTHROPIC
    assert surface_for("/v1/files/file_1/content", ANTHROPIC) is Surface.ANTHROPIC
    assert surface_for("/v1/files", OPENAI) is Surface.OPENAI
    assert surface_for("/v1/files/file-1", OPENAI) is Surface.OPENAI


def test_everything_else_is_anthropic() -> None:
    for path in ("/v1/messages", "/v1/messages/batches", "/v1/modelsx", "/v1/batchesx", "/v1/filesystem"):
        assert surface_for(path, OPENAI) is Surface.ANTHROPIC


def test_the_two_envelopes() -> None:
    exc = ApiError("invalid_request_error", "n: must be 1", param="n", code="invalid_value")
    assert exc.envelope("req_1") == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "n: must be 1"},
        "request_id": "req_1",
    }
    assert exc.openai_envelope() == {
        "error": {"message": "n: must be 1", "type": "invalid_request_error", "param": "n", "code": "invalid_value"}
    }
