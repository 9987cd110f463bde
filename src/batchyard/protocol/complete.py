"""Legacy Text Completions (``POST /v1/complete``) as a Messages request, and the Message
(or its stream events) back as a ``completion``. Pure: no I/O.

The prompt is the old transcript form, ``[system text]\\n\\nHuman: …\\n\\nAssistant: …``.
As the API does, it is lightly sanitised first (trailing whitespace dropped, a missing
leading ``\\n\\n`` before ``Human:`` added), then it must start with a Human turn (after
an optional system prompt) and end with an Assistant turn. The text before the first
Human turn becomes ``system``; the turns become ``user``/``assistant`` messages (a text
after the last ``\\n\\nAssistant:`` is a prefill the completion continues). Then the one
Messages validator does the rest.

| Text Completions | Messages |
|---|---|
| `prompt` | `system` + `messages` |
| `max_tokens_to_sample` | `max_tokens` |
| `stop_sequences` | `stop_sequences`, plus `\\n\\nHuman:`, which always ends a turn |
| `temperature`, `top_p`, `top_k`, `metadata`, `stream` | the same |

Back: the text blocks joined are `completion`; `stop_reason` is `max_tokens` when the
limit cut it off and `stop_sequence` otherwise, with `stop` naming the sequence
(`\\n\\nHuman:` for a natural end of turn, as the model's own turn marker).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ApiError, invalid_request
from .messages import Metadata, ModelResolver, ValidatedRequest, first_error_message, validate_message_request

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
# The API's own words for a prompt that is not a transcript.
MUST_START = 'prompt must start with "\n\nHuman:" turn after an optional system prompt'
MUST_END = 'prompt must end with "\n\nAssistant:" turn'

_TURN = re.compile(r"\n\n(Human|Assistant):")


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Required fields first, then the rest alphabetically, as the API's schema lists them.
    max_tokens_to_sample: int = Field(ge=1)
    model: str = Field(min_length=1, max_length=256)
    prompt: str = Field(min_length=1)
    metadata: Metadata | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)


def transcript(prompt: str) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt and the messages of a ``Human:``/``Assistant:`` transcript."""
    text = prompt.rstrip()
    if text.startswith("Human:"):
        text = "\n\n" + text
    turns = list(_TURN.finditer(text))
    if not turns or turns[0].group(1) != "Human":
        raise invalid_request(MUST_START)
    if turns[-1].group(1) != "Assistant":
        raise invalid_request(MUST_END)
    system = text[: turns[0].start()].strip()
    messages: list[dict[str, Any]] = []
    for number, turn in enumerate(turns):
        end = turns[number + 1].start() if number + 1 < len(turns) else len(text)
        role = "user" if turn.group(1) == "Human" else "assistant"
        content = text[turn.end() : end].strip()
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = "\n\n".join(part for part in (messages[-1]["content"], content) if part)
        else:
            messages.append({"role": role, "content": content})
    if not messages[-1]["content"]:
        messages.pop()  # an empty Assistant turn: the reply starts from nothing
    return system, messages


@dataclass(slots=True)
class CompleteRequest:
    validated: ValidatedRequest
    stream: bool


def translate_request(body: Any, version: str, models: ModelResolver) -> CompleteRequest:
    """Check a Text Completions body and make it a validated Messages request."""
    if not isinstance(body, dict):
        raise invalid_request("Input should be a valid dictionary or object to extract fields from")
    try:
        request = CompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_request(first_error_message(exc)) from None
    system, messages = transcript(request.prompt)
    out: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens_to_sample, "messages": messages}
    if system:
        out["system"] = system
    stops = list(request.stop_sequences or [])
    out["stop_sequences"] = stops if HUMAN in stops else [*stops, HUMAN]
    for name in ("temperature", "top_p", "top_k"):
        if getattr(request, name) is not None:
            out[name] = getattr(request, name)
    if request.metadata is not None:
        out["metadata"] = request.metadata.model_dump(exclude_none=True)
    if request.stream:
        out["stream"] = True
    try:
        validated = validate_message_request(out, version, models)
    except ApiError as exc:
        if not exc.message.startswith("max_tokens:"):
            raise
        # The limit check names the Messages field; name the one the client sent.
        raise ApiError(
            exc.error_type, "max_tokens_to_sample" + exc.message[len("max_tokens") :], status=exc.status
        ) from None
    return CompleteRequest(validated, bool(request.stream))


# -- responses ------------------------------------------------------------------------


def completion_id(message_id: str) -> str:
    return "compl_" + message_id.removeprefix("msg_")


def stop_of(stop_reason: str | None, stop_sequence: str | None) -> tuple[str | None, str | None]:
    """``(stop_reason, stop)`` of a completion from a Message's stop fields."""
    if stop_reason in ("max_tokens", "model_context_window_exceeded"):
        return "max_tokens", None
    if stop_reason == "stop_sequence" and stop_sequence:
        return "stop_sequence", stop_sequence
    return "stop_sequence", HUMAN  # the end of the model's turn


def _completion(message_id: str, model: str, text: str, stop_reason: str | None, stop: str | None) -> dict[str, Any]:
    return {
        "type": "completion",
        "id": completion_id(message_id),
        "completion": text,
        "stop_reason": stop_reason,
        "stop": stop,
        "model": model,
    }


def completion(message: dict[str, Any]) -> dict[str, Any]:
    """The ``completion`` object for a Message."""
    text = "".join(block["text"] for block in message["content"] if block["type"] == "text")
    stop_reason, stop = stop_of(message["stop_reason"], message["stop_sequence"])
    return _completion(message["id"], message["model"], text, stop_reason, stop)


class CompletionStream:
    """Anthropic stream events in, ``completion`` and ``ping`` events out."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event["type"]
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta" and delta["text"]:
                return [_completion(self.id, self.model, delta["text"], None, None)]
            return []
        if kind == "ping":
            return [event]
        if kind == "message_start":
            self.id, self.model = event["message"]["id"], event["message"]["model"]
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            self.stop_sequence = delta.get("stop_sequence") or self.stop_sequence
        elif kind == "message_stop":
            stop_reason, stop = stop_of(self.stop_reason, self.stop_sequence)
            return [_completion(self.id, self.model, "", stop_reason, stop)]
        return []
