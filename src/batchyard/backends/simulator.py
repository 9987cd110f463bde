"""A deterministic, seeded fake model: realistic enough to test client code against.

The same request gives the same reply: the text is drawn from a generator seeded by the
conversation (model, system, messages, tools, thinking), not by ``max_tokens`` or
``stop_sequences``, so those two only cut the same text shorter, as they would a real
model at temperature 0. Tools are called when ``tool_choice`` asks for it (``any``,
``tool``), and under ``auto`` whenever the last user turn is not already a tool result;
the generated ``input`` follows the tool's JSON schema. Token counts come from one
tokenizer used for ``usage`` and ``count_tokens`` alike.

Route options: ``latency_ms`` (a number or ``[min, max]``) before the reply,
``token_latency_ms`` between streamed tokens, ``error_rate`` (0..1) with
``error_types``, ``stream_error_rate`` for failures after a stream has started, and
``crash_marker`` (a request containing it kills the server process, for testing).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import os
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator

from ..protocol import responses
from ..protocol.ids import new_tool_use_id
from ..protocol.messages import (
    CountTokensRequest,
    MessageCreateRequest,
    TextBlock,
    ThinkingAdaptive,
    ThinkingEnabled,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
)
from ..protocol.models import capabilities as model_capabilities
from ..protocol.sse import message_events
from .base import Backend, BackendError, BackendOptions, GenerateRequest

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

_WORDS = (
    "the a of to and in that is for it as with on be by this are from at or an have not which one "
    "all can their more will other about time many them these some would so like into than first "
    "been call who its now find long down day did get come made may part over new sound take only "
    "little work know place year live back give most very after thing our just name good sentence "
    "man think say great where help through much before line right too mean old any same tell boy "
    "follow came want show also around form three small set put end does another well large must big "
    "even such because turn here why ask went men read need land different home us move try kind "
    "hand picture again change off play spell air away animal house point page letter mother answer "
    "found study still learn should world high every near add food between own below country plant "
    "last school father keep tree never start city earth eye light thought head under story saw left "
    "few while along might close something seem next hard open example begin life always those both "
    "paper together got group often run important until children side feet car mile night walk white "
    "sea began grow took river four carry state once book hear stop without second later miss idea "
    "enough eat face watch far indian really almost let above girl sometimes mountain cut young talk "
    "soon list song being leave family batch queue result token model request stream signal garden"
).split()

ERROR_STATUSES = {
    "api_error": (500, "Internal server error"),
    "overloaded_error": (529, "Overloaded"),
    "rate_limit_error": (429, "Rate limited"),
    "timeout_error": (504, "Request timeout"),
    # What a dropped connection looks like from here: retryable, reported as a 502.
    "connection_error": (502, "Connection to the backend was lost"),
    # A backend refusing the request itself: not retryable.
    "invalid_request_error": (400, "The backend refused the request"),
}
FaultType = Literal[
    "api_error", "overloaded_error", "rate_limit_error", "timeout_error", "connection_error", "invalid_request_error"
]


def count_text_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def _cut_after_tokens(text: str, limit: int) -> tuple[str, int, bool]:
    """The prefix of ``text`` holding at most ``limit`` tokens, its token count, and
    whether anything was cut off."""
    count = 0
    for match in _TOKEN_RE.finditer(text):
        if count == limit:
            return text[: match.start()].rstrip(), count, True
        count += 1
    return text, count, False


def _block_text(block: Any) -> str:
    """The text a content block contributes to the prompt, for counting."""
    if isinstance(block, str):
        return block
    data = block.model_dump(exclude_none=True) if hasattr(block, "model_dump") else block
    kind = data.get("type")
    if kind == "text":
        return data["text"]
    if kind == "image":
        return "image " * 85  # a fixed cost per image, like a small picture
    if kind == "tool_use":
        return f"{data['name']} {orjson.dumps(data['input']).decode()}"
    if kind == "tool_result":
        content = data.get("content")
        if isinstance(content, str):
            return content
        return " ".join(_block_text(inner) for inner in content or [])
    if kind == "thinking":
        return data["thinking"]
    if kind == "document":
        source = data["source"]
        if source.get("type") == "text":
            return source["data"]
        if source.get("type") == "content":
            inner = source["content"]
            return inner if isinstance(inner, str) else " ".join(_block_text(b) for b in inner)
        return "document " * 100
    if kind == "search_result":
        return " ".join([data["title"], data["source"], *(b["text"] for b in data["content"])])
    return orjson.dumps(data).decode()


def count_input_tokens(request: MessageCreateRequest | CountTokensRequest) -> int:
    """Prompt tokens: text of system, messages and tools, plus a little per message."""
    total = 0
    if isinstance(request.system, str):
        total += count_text_tokens(request.system)
    elif request.system:
        total += sum(count_text_tokens(b.text) for b in request.system)
    for message in request.messages:
        total += 3  # role and turn markers
        if isinstance(message.content, str):
            total += count_text_tokens(message.content)
        else:
            total += sum(count_text_tokens(_block_text(b)) for b in message.content)
    for tool in request.tools or []:
        total += count_text_tokens(orjson.dumps(tool.model_dump(exclude_none=True, by_alias=True)).decode())
    return total + 1


SEED_FIELDS = ("model", "system", "messages", "tools", "tool_choice", "thinking")


def _seed(request: MessageCreateRequest, body: Any = None) -> int:
    """A seed from what shapes the reply, not from how long it may run: read from the body
    as sent when there is one (the same body, the same reply; no model dump per request),
    else from the validated request."""
    if isinstance(body, dict):
        basis = {key: body[key] for key in SEED_FIELDS if body.get(key) is not None}
    else:
        basis = request.model_dump(include=set(SEED_FIELDS), exclude_none=True, by_alias=True)
    digest = hashlib.sha256(orjson.dumps(basis, option=orjson.OPT_SORT_KEYS)).digest()
    return int.from_bytes(digest[:8], "big")


def _last_user_text(request: MessageCreateRequest) -> str:
    for message in reversed(request.messages):
        if message.role != "user":
            continue
        if isinstance(message.content, str):
            return message.content
        texts = [b.text for b in message.content if isinstance(b, TextBlock)]
        if texts:
            return " ".join(texts)
    return ""


# Text is drawn from a byte stream (SHAKE-256 of the seed): one byte per word from a table
# of 256, a fixed run of bytes per sentence, so a longer reply extends a shorter one. It is
# built as pieces, each one token with the space before it, and only as far as the budget
# reaches: cutting after N tokens is taking N pieces, with no tokenizing of the text.
_TEXT_WORDS = tuple(w for w in _WORDS if w not in {"indian", "boy", "men", "mile", "feet", "spell", "miss"})
assert len(_TEXT_WORDS) == 256
_SPACED = tuple(" " + w for w in _TEXT_WORDS)
_CAPITAL = tuple(w.capitalize() for w in _TEXT_WORDS)
_SPACED_CAPITAL = tuple(" " + w for w in _CAPITAL)
_ENDS = ".....?!"
_SENTENCE_BYTES = 15  # its length, whether and where a comma goes, its end, up to 11 words


def _stream(seed: int, purpose: bytes, sentences: int) -> bytes:
    return hashlib.shake_256(purpose + seed.to_bytes(8, "big")).digest(1 + sentences * _SENTENCE_BYTES)


def _add_sentences(pieces: list[str], stream: bytes, fewest: int, choices: int, limit: int) -> bool:
    """Add ``fewest`` + (a stream byte mod ``choices``) sentences to ``pieces``, stopping
    once there are more than ``limit`` of them; True if it stopped short (the text is cut)."""
    count = fewest + stream[0] % choices
    for number in range(count):
        base = 1 + number * _SENTENCE_BYTES
        length = 5 + stream[base] % 7
        words = stream[base + 4 : base + 4 + length]
        pieces.append((_SPACED_CAPITAL if pieces else _CAPITAL)[words[0]])
        if stream[base + 1] < 77:  # three in ten sentences have a comma, after word 2..length-2
            comma = 2 + stream[base + 2] % (length - 3)
            pieces += [_SPACED[b] for b in words[1:comma]]
            pieces.append(",")
            pieces += [_SPACED[b] for b in words[comma:]]
        else:
            pieces += [_SPACED[b] for b in words[1:]]
        pieces.append(_ENDS[stream[base + 3] % 7])
        if len(pieces) > limit:
            return True
    return False


def _sentences_text(seed: int, purpose: bytes, fewest: int, most: int, limit: int, opening: list[str]) -> tuple[str, int, bool]:
    """Text of ``fewest``..``most`` sentences after ``opening`` (pieces), cut after ``limit``
    tokens: the text, its token count and whether it was cut."""
    pieces = opening
    cut = _add_sentences(pieces, _stream(seed, purpose, most), fewest, most - fewest + 1, limit)
    if cut:
        del pieces[limit:]
    return "".join(pieces), len(pieces), cut


def _opening(request: MessageCreateRequest) -> list[str]:
    """"About <the first six tokens of the last user turn>:" as pieces (none without any)."""
    text = _last_user_text(request)
    topic = _TOKEN_RE.findall(text[:256])  # (a prompt may be long; its first six tokens are not)
    if len(topic) < 7 and len(text) > 256:  # the sixth may run past the cut
        topic = _TOKEN_RE.findall(text)
    return ["About", *(" " + token for token in topic[:6]), ":"] if topic else []


# -- tool inputs from JSON schema ----------------------------------------------------


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value) if value == value and abs(value) < 1e15 else default  # NaN and giants fall back


def fake_from_schema(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A value that validates against a (reasonable) JSON schema. Unreasonable ones
    (huge sizes, odd types) get a small value rather than a failure."""
    if not isinstance(schema, dict) or depth > 6:
        return rng.choice(_WORDS)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [s for s in options if isinstance(s, dict) and s.get("type") != "null"] or options
            return fake_from_schema(usable[0], rng, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged.update(part)
        return fake_from_schema(merged, rng, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or kind
        kind = kinds[0] if kinds else None
    if not isinstance(kind, str):
        kind = "object" if isinstance(schema.get("properties"), dict) else "string"
    if kind == "object":
        properties = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)] if isinstance(schema.get("required"), list) else []
        value: dict[str, Any] = {}
        for name, sub in list(properties.items())[:50]:
            if name in required or rng.random() < 0.5:
                value[name] = fake_from_schema(sub, rng, depth + 1)
        for name in required[:50]:
            if name not in value:
                value[name] = rng.choice(_WORDS)
        return value
    if kind == "array":
        fewest = int(min(max(_number(schema.get("minItems"), 1), 0), 5))
        most = int(min(max(_number(schema.get("maxItems"), fewest + 2), fewest), fewest + 3))
        return [fake_from_schema(schema.get("items", {}), rng, depth + 1) for _ in range(rng.randint(fewest, most))]
    if kind in ("integer", "number"):
        step = 1.0 if kind == "integer" else 0.01
        low = _number(schema.get("minimum"), _number(schema.get("exclusiveMinimum"), -step) + step)
        high = _number(schema.get("maximum"), _number(schema.get("exclusiveMaximum"), low + 100 + step) - step)
        high = max(high, low)
        if kind == "integer":
            return rng.randint(int(math.ceil(low)), max(int(math.ceil(low)), int(math.floor(high))))
        return round(rng.uniform(low, high), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
    min_length = int(min(max(_number(schema.get("minLength"), 0), 0), 1000))
    if len(text) < min_length:
        text = (text + " ") * (min_length // max(len(text), 1) + 1)
    max_length = schema.get("maxLength")
    if isinstance(max_length, int) and not isinstance(max_length, bool) and max_length >= 0:
        text = text[:max_length]
    return text


# -- the backend -----------------------------------------------------------------------


DEFAULT_FAULTS: tuple[FaultType, ...] = ("api_error", "overloaded_error")


class SimulatorOptions(BackendOptions):
    latency_ms: float | tuple[float, float] = 0.0
    token_latency_ms: float = Field(default=0.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    error_types: list[FaultType] = Field(default_factory=lambda: list(DEFAULT_FAULTS), min_length=1)
    retry_after: float | None = Field(default=None, ge=0)  # sent with simulated rate limits
    stream_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int | None = None
    # A request whose last user text contains this string kills the whole process, as a
    # line that crashes its worker would: for testing supervision and poison-line handling.
    crash_marker: str | None = Field(default=None, min_length=1)

    @field_validator("latency_ms")
    @classmethod
    def _non_negative(cls, value: float | tuple[float, float]) -> float | tuple[float, float]:
        low, high = value if isinstance(value, tuple) else (value, value)
        if low < 0 or high < low:
            raise ValueError("latency_ms must be a non-negative number or [min, max] with min <= max")
        return value


class SimulatorBackend(Backend):
    name = "simulator"
    options_model = SimulatorOptions
    options: SimulatorOptions

    def __init__(self, route: Any) -> None:
        super().__init__(route)
        self._faults = random.Random(self.options.seed)

    # -- generation ----------------------------------------------------------------

    def generate(self, req: GenerateRequest) -> dict[str, Any]:
        """The reply as a Message body (no waiting, no faults)."""
        request = req.request
        seed = _seed(request, req.body)
        budget = request.max_tokens
        stops = [s for s in request.stop_sequences or [] if s]
        content: list[dict[str, Any]] = []
        used = 0
        stop_reason = "end_turn"
        stop_sequence = None

        thinking = request.thinking
        if isinstance(thinking, (ThinkingEnabled, ThinkingAdaptive)) and budget > 0:
            limit = budget
            if isinstance(thinking, ThinkingEnabled):
                limit = min(budget, thinking.budget_tokens)
            idea, n, cut = _sentences_text(seed, b"thinking", 1, 3, limit, [])
            signature = base64.b64encode(hashlib.sha256(idea.encode()).digest()).decode()
            shown = "" if thinking.display == "omitted" else idea
            content.append({"type": "thinking", "thinking": shown, "signature": signature})
            used += n
            if cut and n >= budget:
                return self._message(req, content, "max_tokens", None, used)

        rng = random.Random(seed) if request.tools else None  # tool choice and input only
        tool = None if rng is None else self._tool_to_call(request, rng)
        if tool is not None and isinstance(request.tool_choice, (ToolChoiceAny, ToolChoiceTool)):
            # A forced tool call: the real API prefills the turn, so the call comes first.
            text, n, cut = _cut_after_tokens("", budget - used)
        elif tool is not None:
            text, n, cut = _cut_after_tokens(f"I'll use the {tool.name} tool.", budget - used)
        else:
            # 2-4 sentences of 5-11 words after an opening of at most 8 tokens: a whole reply
            # fits in 64 tokens (at most 4 x 13 + 8 = 60).
            text, n, cut = _sentences_text(seed, b"text", 2, 4, budget - used, _opening(request))
        hit = self._first_stop(text, stops)
        if hit is not None:
            index, sequence = hit
            text = text[:index]
            n = count_text_tokens(text) + count_text_tokens(sequence)
            stop_reason, stop_sequence = "stop_sequence", sequence
        elif cut:
            stop_reason = "max_tokens"
        if text:
            content.append(responses.text_block(text))
        used += n
        if stop_reason != "end_turn" or tool is None:
            return self._message(req, content, stop_reason, stop_sequence, used)

        assert rng is not None
        tool_input = fake_from_schema(tool.input_schema.model_dump(exclude_none=True), rng)
        cost = count_text_tokens(orjson.dumps(tool_input).decode()) + 2
        if used + cost > budget:
            return self._message(req, content, "max_tokens", None, budget)
        content.append({"type": "tool_use", "id": new_tool_use_id(), "name": tool.name, "input": tool_input})
        return self._message(req, content, "tool_use", None, used + cost)

    @staticmethod
    def _first_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for sequence in stops:
            index = text.find(sequence)
            if index >= 0 and (best is None or index < best[0]):
                best = (index, sequence)
        return best

    @staticmethod
    def _tool_to_call(request: MessageCreateRequest, rng: random.Random) -> Any:
        tools = [t for t in request.tools or [] if hasattr(t, "input_schema")]
        choice = request.tool_choice
        if not tools or isinstance(choice, ToolChoiceNone):
            return None
        if isinstance(choice, ToolChoiceTool):
            return next((t for t in tools if t.name == choice.name), None)
        if isinstance(choice, ToolChoiceAny):
            return rng.choice(tools)
        last = request.messages[-1]
        answered = isinstance(last.content, list) and any(isinstance(b, ToolResultBlock) for b in last.content)
        if last.role != "user" or answered:
            return None
        return rng.choice(tools)

    def _message(
        self, req: GenerateRequest, content: list[dict[str, Any]], stop_reason: str, stop_sequence: str | None, used: int
    ) -> dict[str, Any]:
        return responses.message(
            model=req.request.model,
            content=content,
            stop_reason=stop_reason,
            stop_sequence=stop_sequence,
            usage=responses.usage(count_input_tokens(req.request), used, service_tier=req.service_tier),
        )

    # -- the interface -------------------------------------------------------------

    def _fault(self) -> BackendError:
        kind = self._faults.choice(self.options.error_types)
        status, message = ERROR_STATUSES[kind]
        if kind == "connection_error":
            return BackendError(status, message, error_type="api_error", retryable=True)
        retry_after = self.options.retry_after if kind == "rate_limit_error" else None
        return BackendError(status, message, error_type=kind, retry_after=retry_after)

    def _maybe_fail(self, rate: float) -> None:
        if rate and self._faults.random() < rate:
            raise self._fault()

    def _latency(self) -> float:
        value = self.options.latency_ms
        if isinstance(value, tuple):
            return self._faults.uniform(*value) / 1000
        return value / 1000

    def _maybe_crash(self, req: GenerateRequest) -> None:
        marker = self.options.crash_marker
        if marker is not None and marker in _last_user_text(req.request):
            os._exit(70)  # no cleanup, no goodbye: what a segfault in a model looks like

    def instant(self) -> bool:
        return self.options.latency_ms in (0, (0, 0)) and not self.options.token_latency_ms

    async def create(self, req: GenerateRequest) -> dict[str, Any]:
        self._maybe_crash(req)
        delay = self._latency()
        message = self.generate(req)
        delay += self.options.token_latency_ms * message["usage"]["output_tokens"] / 1000
        if delay > 0:
            await asyncio.sleep(delay)
        self._maybe_fail(self.options.error_rate)
        return message

    async def _streamed_reply(self, req: GenerateRequest) -> dict[str, Any]:
        self._maybe_crash(req)
        delay = self._latency()
        if delay > 0:
            await asyncio.sleep(delay)
        self._maybe_fail(self.options.error_rate)
        return self.generate(req)

    async def stream_bursts(self, req: GenerateRequest) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Without a pause between tokens or faults mid-stream, the whole reply is ready at
        once: one burst."""
        if self.options.token_latency_ms or self.options.stream_error_rate:
            async for burst in super().stream_bursts(req):
                yield burst
            return
        yield list(message_events(await self._streamed_reply(req)))

    async def stream(self, req: GenerateRequest) -> AsyncIterator[dict[str, Any]]:
        message = await self._streamed_reply(req)
        pause = self.options.token_latency_ms / 1000
        fail_at = -1
        if self.options.stream_error_rate and self._faults.random() < self.options.stream_error_rate:
            fail_at = 2  # after message_start and the first block's start
        for number, event in enumerate(message_events(message)):
            if number == fail_at:
                raise self._fault()
            if pause and event["type"] == "content_block_delta":
                await asyncio.sleep(pause)
            yield event

    async def count_tokens(self, request: CountTokensRequest | MessageCreateRequest) -> int:
        return count_input_tokens(request)

    def capabilities(self) -> dict[str, Any]:
        return model_capabilities(thinking=True, image_input=True, pdf_input=True)
