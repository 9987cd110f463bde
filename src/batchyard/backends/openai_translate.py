"""Anthropic Messages <-> OpenAI Chat Completions, both ways. Pure: no I/O.

| Anthropic | OpenAI chat.completions |
|---|---|
| `system` (string or text blocks) | leading `system` message (blocks joined by blank lines) |
| `messages[].role: system` (2026 SDKs) | `system` message in place |
| user `text` block | `{"type": "text"}` part (plain string when it is the only part) |
| user `image` block, base64 | `{"type": "image_url", "image_url": {"url": "data:<media_type>;base64,<data>"}}` |
| user `image` block, url | `{"type": "image_url", "image_url": {"url": <url>}}` |
| `document` block, plain text or content source | text part (title and context first) |
| `document` block, PDF / file / url | refused (400): no portable OpenAI form |
| user `tool_result` block | `{"role": "tool", "tool_call_id": <tool_use_id>, "content": <text>}` before the user's other content; `is_error: true` prefixes the content with `Error: ` |
| assistant `text` blocks | `content` (joined) |
| assistant `tool_use` block | `tool_calls[] = {"id", "type": "function", "function": {"name", "arguments": <input as JSON>}}` |
| `thinking` / `redacted_thinking` blocks | dropped |
| `tools[]` (custom) | `tools[] = {"type": "function", "function": {"name", "description", "parameters": <input_schema>}}` |
| server tools (`web_search_…`, …) | refused (400) |
| `tool_choice` auto / any / tool / none | `"auto"` / `"required"` / `{"type": "function", "function": {"name"}}` / `"none"` |
| `disable_parallel_tool_use: true` | `parallel_tool_calls: false` |
| `stop_sequences` | `stop` |
| `max_tokens`, `temperature`, `top_p` | same names |
| `top_k` | `top_k` when the route's `top_k` option is on (vLLM, llama.cpp, SGLang take it) |
| `metadata.user_id` | `user` |
| `thinking` enabled / adaptive | route option `reasoning`: `reasoning_effort` (OpenAI, vLLM) or `chat_template_kwargs.enable_thinking` (Qwen-style templates); else dropped |
| `stream: true` | `stream: true`, `stream_options.include_usage: true` |

Back:

| OpenAI | Anthropic |
|---|---|
| `message.content` | `text` block |
| `message.reasoning_content` (when thinking was asked for) | `thinking` block (empty signature) |
| `message.tool_calls[]` | `tool_use` blocks; `arguments` parsed to `input` (invalid JSON: `api_error`) |
| `finish_reason: stop` | `end_turn`, or `stop_sequence` when the upstream names the stop string that matched (`stop_reason` from vLLM, `matched_stop` from SGLang) |
| `finish_reason: length` | `max_tokens` |
| `finish_reason: tool_calls` / `function_call` | `tool_use` |
| `finish_reason: content_filter` | `refusal` |
| `usage.prompt_tokens` − cached | `input_tokens` |
| `usage.prompt_tokens_details.cached_tokens` | `cache_read_input_tokens` |
| `usage.completion_tokens` | `output_tokens` |
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from ..protocol import responses
from ..protocol.ids import new_tool_use_id
from ..protocol.messages import (
    Base64ImageSource,
    ContentBlockSource,
    CustomTool,
    DocumentBlock,
    ImageBlock,
    MessageCreateRequest,
    PlainTextSource,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingAdaptive,
    ThinkingBlock,
    ThinkingEnabled,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
    UrlSource,
)
from ..protocol.responses import ServiceTier
from .base import BackendError

Reasoning = Literal["none", "reasoning_effort", "enable_thinking"]
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def unsupported(message: str) -> BackendError:
    return BackendError(400, message, error_type="invalid_request_error")


def _document_text(block: DocumentBlock) -> str:
    source = block.source
    if isinstance(source, PlainTextSource):
        body = source.data
    elif isinstance(source, ContentBlockSource):
        if isinstance(source.content, str):
            body = source.content
        else:
            body = "\n\n".join(b.text for b in source.content if isinstance(b, TextBlock))
    else:
        raise unsupported(
            f"document blocks with a {source.type!r} source are not supported by the openai backend; "
            "send the text as a plain-text document or a text block"
        )
    head = [part for part in (block.title, block.context) if part]
    return "\n\n".join([*head, body])


def _image_part(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    if isinstance(source, Base64ImageSource):
        return {"type": "image_url", "image_url": {"url": f"data:{source.media_type};base64,{source.data}"}}
    if isinstance(source, UrlSource):
        return {"type": "image_url", "image_url": {"url": source.url}}
    raise unsupported("image blocks from the Files API are not supported by the openai backend")


def _tool_result_text(block: ToolResultBlock) -> str:
    if block.content is None:
        text = ""
    elif isinstance(block.content, str):
        text = block.content
    else:
        parts = []
        for inner in block.content:
            if isinstance(inner, TextBlock):
                parts.append(inner.text)
            elif isinstance(inner, DocumentBlock):
                parts.append(_document_text(inner))
            else:
                raise unsupported(f"{inner.type} blocks inside tool_result are not supported by the openai backend")
        text = "\n\n".join(parts)
    return f"Error: {text}" if block.is_error else text


def _user_messages(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, ToolResultBlock):
            tool_messages.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": _tool_result_text(block)})
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image_part(block))
        elif isinstance(block, DocumentBlock):
            parts.append({"type": "text", "text": _document_text(block)})
        elif isinstance(block, (ThinkingBlock, RedactedThinkingBlock)):
            continue
        else:
            raise unsupported(f"{block.type} blocks are not supported by the openai backend")
    out = list(tool_messages)
    if parts:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if only_text else parts})
    return out


def _assistant_message(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": orjson.dumps(block.input).decode()},
                }
            )
        elif isinstance(block, (ThinkingBlock, RedactedThinkingBlock)):
            continue
        elif isinstance(block, DocumentBlock):
            texts.append(_document_text(block))
        else:
            raise unsupported(f"{block.type} blocks are not supported by the openai backend")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _system_text(system: Any) -> str:
    return system if isinstance(system, str) else "\n\n".join(b.text for b in system)


def to_chat_completion(
    request: MessageCreateRequest,
    *,
    model: str,
    stream: bool,
    top_k: bool = True,
    reasoning: Reasoning = "none",
    extra_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": _system_text(request.system)})
    for message in request.messages:
        if message.role == "system":
            messages.append({"role": "system", "content": _system_text(message.content)})
        elif message.role == "user":
            messages += _user_messages(message.content)
        else:
            messages.append(_assistant_message(message.content))

    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": request.max_tokens}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None and top_k:
        body["top_k"] = request.top_k
    if request.stop_sequences:
        body["stop"] = list(request.stop_sequences)
    if request.metadata is not None and request.metadata.user_id:
        body["user"] = request.metadata.user_id
    if request.tools:
        tools = []
        for tool in request.tools:
            if not isinstance(tool, CustomTool):
                raise unsupported(f"server tool {tool.type!r} is not supported by the openai backend")
            function: dict[str, Any] = {
                "name": tool.name,
                "parameters": tool.input_schema.model_dump(exclude_none=True),
            }
            if tool.description:
                function["description"] = tool.description
            tools.append({"type": "function", "function": function})
        body["tools"] = tools
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceAuto):
        body["tool_choice"] = "auto"
    elif isinstance(choice, ToolChoiceAny):
        body["tool_choice"] = "required"
    elif isinstance(choice, ToolChoiceTool):
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif isinstance(choice, ToolChoiceNone):
        body["tool_choice"] = "none"
    if getattr(choice, "disable_parallel_tool_use", None):
        body["parallel_tool_calls"] = False
    if isinstance(request.thinking, (ThinkingEnabled, ThinkingAdaptive)):
        if reasoning == "reasoning_effort":
            body["reasoning_effort"] = "medium"
        elif reasoning == "enable_thinking":
            body["chat_template_kwargs"] = {"enable_thinking": True}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if extra_body:
        body.update(extra_body)
    return body


# -- responses -----------------------------------------------------------------------

FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _stop(finish_reason: str | None, choice: dict[str, Any], stops: list[str]) -> tuple[str, str | None]:
    if finish_reason == "stop":
        matched = choice.get("stop_reason", choice.get("matched_stop"))
        if isinstance(matched, str) and matched in stops:
            return "stop_sequence", matched
    return FINISH_REASONS.get(finish_reason or "stop", "end_turn"), None


def _usage(usage: dict[str, Any] | None, tier: ServiceTier) -> dict[str, Any]:
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
    cached = min(cached, prompt)
    return responses.usage(
        prompt - cached, int(usage.get("completion_tokens") or 0), service_tier=tier, cache_read_input_tokens=cached
    )


def _tool_input(arguments: str | None, name: str) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError as exc:
        raise BackendError(
            502,
            f"the upstream's call of tool {name!r} has arguments that are not valid JSON ({exc})",
            error_type="api_error",
            retryable=False,
        ) from None
    if not isinstance(value, dict):
        raise BackendError(
            502, f"the upstream's call of tool {name!r} has arguments that are not a JSON object", retryable=False
        )
    return value


def _tool_id(upstream_id: Any) -> str:
    return upstream_id if isinstance(upstream_id, str) and _TOOL_ID.match(upstream_id) else new_tool_use_id()


def from_chat_completion(
    data: dict[str, Any], request: MessageCreateRequest, *, model: str, tier: ServiceTier
) -> dict[str, Any]:
    choices = data.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        raise BackendError(502, "the upstream's answer has no choices", error_type="api_error")
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    wants_thinking = isinstance(request.thinking, (ThinkingEnabled, ThinkingAdaptive))
    reasoning_text = message.get("reasoning_content") or message.get("reasoning")
    if wants_thinking and isinstance(reasoning_text, str) and reasoning_text:
        content.append({"type": "thinking", "thinking": reasoning_text, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append(responses.text_block(text))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        name = function.get("name") or ""
        content.append(
            {"type": "tool_use", "id": _tool_id(call.get("id")), "name": name, "input": _tool_input(function.get("arguments"), name)}
        )
    stop_reason, stop_sequence = _stop(choice.get("finish_reason"), choice, list(request.stop_sequences or []))
    if stop_reason == "end_turn" and any(b["type"] == "tool_use" for b in content):
        stop_reason = "tool_use"
    return responses.message(
        model=model,
        content=content,
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        usage=_usage(data.get("usage"), tier),
    )


@dataclass
class _OpenBlock:
    index: int
    kind: str
    tool_index: int | None = None
    name: str = ""
    arguments: str = ""


@dataclass
class StreamTranslator:
    """Turns OpenAI stream chunks into the Anthropic event sequence, one chunk at a time."""

    request: MessageCreateRequest
    model: str
    tier: ServiceTier
    started: bool = False
    next_index: int = 0
    block: _OpenBlock | None = None
    finish_reason: str | None = None
    last_choice: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    output_pieces: int = 0
    saw_tool: bool = False

    def _start(self) -> Iterator[dict[str, Any]]:
        if self.started:
            return
        self.started = True
        head = responses.message(
            model=self.model,
            content=[],
            stop_reason=None,
            stop_sequence=None,
            usage=responses.usage(0, 0, service_tier=self.tier),
        )
        yield {"type": "message_start", "message": head}

    def _close_block(self) -> Iterator[dict[str, Any]]:
        if self.block is not None:
            yield {"type": "content_block_stop", "index": self.block.index}
            self.block = None

    def _open(self, kind: str, content_block: dict[str, Any], tool_index: int | None = None) -> Iterator[dict[str, Any]]:
        yield from self._close_block()
        self.block = _OpenBlock(self.next_index, kind, tool_index, content_block.get("name", ""))
        self.next_index += 1
        yield {"type": "content_block_start", "index": self.block.index, "content_block": content_block}
        if self.block.index == 0:
            yield {"type": "ping"}

    def feed(self, chunk: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from self._start()
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            reasoning_text = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning_text and isinstance(self.request.thinking, (ThinkingEnabled, ThinkingAdaptive)):
                if self.block is None or self.block.kind != "thinking":
                    yield from self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                yield self._delta({"type": "thinking_delta", "thinking": reasoning_text})
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.block is None or self.block.kind != "text":
                    yield from self._open("text", {"type": "text", "text": "", "citations": None})
                self.output_pieces += 1
                yield self._delta({"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or []:
                yield from self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.last_choice = choice

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        assert self.block is not None
        return {"type": "content_block_delta", "index": self.block.index, "delta": delta}

    def _tool_call(self, call: dict[str, Any]) -> Iterator[dict[str, Any]]:
        position = call.get("index", 0)
        function = call.get("function") or {}
        if self.block is None or self.block.kind != "tool_use" or self.block.tool_index != position:
            if self.block is not None and self.block.kind == "tool_use":
                self._check_arguments()
            name = function.get("name") or ""
            block: dict[str, Any] = {"type": "tool_use", "id": _tool_id(call.get("id")), "name": name, "input": {}}
            self.saw_tool = True
            yield from self._open("tool_use", block, position)
            yield self._delta({"type": "input_json_delta", "partial_json": ""})
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            assert self.block is not None
            self.block.arguments += piece
            self.output_pieces += 1
            yield self._delta({"type": "input_json_delta", "partial_json": piece})

    def _check_arguments(self) -> None:
        if self.block is not None and self.block.kind == "tool_use":
            _tool_input(self.block.arguments or "{}", self.block.name)

    def finish(self) -> Iterator[dict[str, Any]]:
        yield from self._start()
        self._check_arguments()
        had_tool = self.saw_tool or self.finish_reason in ("tool_calls", "function_call")
        yield from self._close_block()
        stop_reason, stop_sequence = _stop(self.finish_reason, self.last_choice, list(self.request.stop_sequences or []))
        if stop_reason == "end_turn" and had_tool:
            stop_reason = "tool_use"
        usage = _usage(self.usage, self.tier)
        if self.usage is None:
            usage["output_tokens"] = self.output_pieces  # the upstream sent no usage: count what came
        yield {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": {
                "input_tokens": usage["input_tokens"],
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": usage["cache_read_input_tokens"],
                "output_tokens": usage["output_tokens"],
                "server_tool_use": None,
            },
        }
        yield {"type": "message_stop"}
