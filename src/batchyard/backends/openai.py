"""Backend for any OpenAI-compatible server: vLLM, SGLang, llama.cpp, Ollama, TGI, LM Studio.

Route options: ``base_url`` (ending in ``/v1``, as the OpenAI SDK takes it; or a list of
them), ``api_key`` or ``api_key_env``, ``model`` (the upstream's name), ``timeout``,
``connect_timeout``, ``max_connections``, ``top_k`` (send ``top_k``: on by default),
``reasoning`` (how to ask for thinking: ``none``, ``reasoning_effort``,
``enable_thinking``) and ``extra_body`` (a table merged into every request).
The translation itself is in :mod:`.openai_translate`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson
from pydantic import Field

from ..protocol.messages import CountTokensRequest, MessageCreateRequest
from .base import BackendError, GenerateRequest
from .openai_translate import Reasoning, StreamTranslator, from_chat_completion, to_chat_completion
from .simulator import count_input_tokens
from .upstream import HttpBackend, HttpBackendOptions, error_from_response, json_or_none, post_stream, sse_bursts


class OpenAIOptions(HttpBackendOptions):
    top_k: bool = True
    reasoning: Reasoning = "none"
    extra_body: dict[str, Any] = Field(default_factory=dict)


class OpenAIBackend(HttpBackend):
    name = "openai"
    options_model = OpenAIOptions
    options: OpenAIOptions

    def _headers(self) -> dict[str, str]:
        key = self.options.resolve_key()
        return {"authorization": f"Bearer {key}"} if key else {}

    def _body(self, req: GenerateRequest, stream: bool) -> dict[str, Any]:
        return to_chat_completion(
            req.request,
            model=self.options.model or req.request.model,
            stream=stream,
            top_k=self.options.top_k,
            reasoning=self.options.reasoning,
            extra_body=self.options.extra_body,
        )

    async def create(self, req: GenerateRequest) -> dict[str, Any]:
        body = orjson.dumps(self._body(req, stream=False))
        _, payload = await self.post_json("/chat/completions", body, {**self._headers(), "content-type": "application/json"})
        if not isinstance(payload, dict):
            raise BackendError(502, "the upstream's answer is not a JSON object", error_type="api_error")
        return from_chat_completion(payload, req.request, model=req.request.model, tier=req.service_tier)

    async def pass_through(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI-format body for an endpoint other than chat (``/v1/embeddings``,
        ``/v1/completions``: lines of an OpenAI batch), sent as it is but for the model's
        upstream name; the upstream's answer is the line's."""
        asked = body.get("model")
        if self.options.model:
            body = {**body, "model": self.options.model}
        path = endpoint.removeprefix("/v1")
        _, payload = await self.post_json(path, orjson.dumps(body), {**self._headers(), "content-type": "application/json"})
        if not isinstance(payload, dict):
            raise BackendError(502, "the upstream's answer is not a JSON object", error_type="api_error")
        if "model" in payload:
            payload["model"] = asked  # the name the client knows, not the upstream's
        return payload

    async def stream_bursts(self, req: GenerateRequest) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The translated events of each network read together."""
        assert self.pool is not None, "backend not started"
        body = orjson.dumps(self._body(req, stream=True))
        headers = {**self._headers(), "content-type": "application/json", "accept": "text/event-stream"}
        translator = StreamTranslator(req.request, req.request.model, req.service_tier)
        burst: list[dict[str, Any]] = []
        try:
            async with self.pool.use() as lease, post_stream(lease, "/chat/completions", body, headers) as response:
                async for datas in sse_bursts(response):
                    for _, data in datas:
                        if data == "[DONE]":
                            break
                        chunk = json_or_none(data.encode())
                        if not isinstance(chunk, dict):
                            raise BackendError(502, "the upstream sent a stream chunk that is not a JSON object")
                        if "error" in chunk and "choices" not in chunk:
                            raise error_from_response(response.status, response.headers, chunk)
                        burst.extend(translator.feed(chunk))
                    else:
                        if burst:
                            yield burst
                            burst = []
                        continue
                    break  # [DONE]
            burst.extend(translator.finish())
        except BackendError:
            if burst:  # what came before the failure still reaches the client, then the error
                yield burst
            raise
        if burst:
            yield burst

    async def count_tokens(self, request: CountTokensRequest | MessageCreateRequest) -> int:
        # OpenAI-compatible servers share no token-count endpoint: estimate with the
        # simulator's tokenizer (the same words-and-punctuation count).
        return count_input_tokens(request)
