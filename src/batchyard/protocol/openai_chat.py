"""Anthropic's OpenAI SDK compatibility: a ``chat.completions`` body in, a Messages body
out, and the resulting Message (or its stream events) back as OpenAI objects. Pure: no I/O.

The chat body is checked here, with OpenAI's error wording and ``param``; the Messages body
it becomes then goes through the one validator every entry point uses
(:func:`~.messages.validate_message_request`), so routes, backends and limits are those of
``/v1/messages``.

| chat.completions | Messages |
|---|---|
| `system` and `developer` messages (anywhere) | one `system` prompt, their texts joined with `\\n` |
| `user` string or `text` parts | the same text (a string, or `text` blocks) |
| `user` `image_url` part, `data:` URL | `image` block with a `base64` source |
| `user` `image_url` part, other URL | `image` block with a `url` source (`detail` dropped) |
| `user` `input_audio` and `file` parts | dropped |
| `assistant` `content` | `text` block (`refusal` parts dropped) |
| `assistant` `tool_calls[]` | `tool_use` blocks, `arguments` parsed to `input` |
| `assistant` `function_call` (deprecated) | one `tool_use` block with an id made from its position |
| `tool` message | `tool_result` block in the next user turn, `tool_call_id` → `tool_use_id` |
| `function` message (deprecated) | `tool_result` for the latest unanswered `function_call` of that name |
| `max_completion_tokens`, else `max_tokens` | `max_tokens` (neither: the route's limit, else 4096) |
| `stop` (string or list) | `stop_sequences` (whitespace-only sequences dropped) |
| `temperature` | `temperature`, capped at 1 |
| `top_p` | `top_p` |
| `n` | must be 1 |
| `tools[].function.{name, description, parameters}` / `functions[]` | custom tools (`strict` dropped) |
| `tool_choice` `none` / `auto` / `required` / named | `none` / `auto` / `any` / `tool` |
| `function_call` `none` / `auto` / named | the same, for `functions` |
| `parallel_tool_calls: false` (and any `functions` call) | `disable_parallel_tool_use: true` |
| `thinking` (an extra body field) | `thinking`; the reasoning text is not returned |
| `stream`, `stream_options.include_usage` | `stream`; usage in a last chunk when asked |
| `logprobs`, `metadata`, `response_format`, `seed`, `user`, ... and unknown fields | ignored |

Back: one choice; text blocks joined into `content`; `tool_use` blocks as `tool_calls` with
JSON-string `arguments` (as `function_call` when the request used `functions`);
`finish_reason` from the stop reason (`end_turn`/`stop_sequence`/`pause_turn` → `stop`,
`max_tokens`/`model_context_window_exceeded` → `length`, `tool_use` → `tool_calls`,
`refusal` → `content_filter`); `usage.prompt_tokens` counts all input tokens, cached ones
included.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, NotRequired, Union

import orjson
from pydantic import ConfigDict, Discriminator, Field, Strict, Tag, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from .errors import ApiError
from .messages import ModelResolver, ValidatedRequest, validate_message_request
from .versions import V2023_06_01

DEFAULT_MAX_TOKENS = 4096
_HIDDEN = "§"  # union tags that are not part of a parameter's path

Text = Annotated[str, Strict()]
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Number = Annotated[float, Strict()]


def _content_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return f"{_HIDDEN}str"
    if isinstance(value, list):
        return f"{_HIDDEN}list"
    return None


def _content(part: Any) -> Any:
    """``string | array of parts``, with one error when it is neither."""
    return Annotated[
        Annotated[Text, Tag(f"{_HIDDEN}str")] | Annotated[list[part], Tag(f"{_HIDDEN}list")],
        Discriminator(_content_tag, custom_error_type="content_type", custom_error_message="string or array"),
    ]


# -- the request -------------------------------------------------------------------
# TypedDicts rather than models: validated in one pass of pydantic-core into plain dicts
# (a key left out stays out), which costs a third of building model instances, and this
# layer only reads them once. Keys it does not read are accepted and dropped, as
# Anthropic's layer does.

_LENIENT = ConfigDict(extra="ignore")


class TextPart(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    type: Literal["text"]
    text: Text


class ImageUrl(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    url: Text
    detail: NotRequired[Any]


class ImagePart(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    type: Literal["image_url"]
    image_url: ImageUrl


class DroppedPart(TypedDict):
    """Parts Anthropic's layer ignores (audio, files) and assistant refusals."""

    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    type: Text


# Unions picked by a tag field ("role", "type"). Their tags are hidden from error paths,
# and a missing or unknown tag is one error naming the values allowed.
_TAG_ERRORS: dict[str, tuple[str, list[str]]] = {}


def _tagged(key: str, choices: dict[str, Any], error: str) -> Any:
    _TAG_ERRORS[error] = (key, list(choices))

    def tag(value: Any) -> str | None:
        found = value.get(key) if isinstance(value, dict) else None
        return f"{_HIDDEN}{found}" if isinstance(found, str) and found in choices else None

    members = tuple(Annotated[model, Tag(f"{_HIDDEN}{name}")] for name, model in choices.items())
    return Annotated[Union[members], Discriminator(tag, custom_error_type=error, custom_error_message=f"bad {key}")]


UserPart = _tagged(
    "type", {"text": TextPart, "image_url": ImagePart, "input_audio": DroppedPart, "file": DroppedPart}, "user_part_tag"
)
AssistantPart = _tagged("type", {"text": TextPart, "refusal": DroppedPart}, "assistant_part_tag")


if TYPE_CHECKING:  # what the validating annotations below mean, for the type checker
    SystemContent = str | list[dict[str, Any]]
    UserContent = str | list[dict[str, Any]]
    AssistantContent = str | list[dict[str, Any]]
    ToolContent = str | list[dict[str, Any]]
else:
    SystemContent = _content(TextPart)
    UserContent = _content(UserPart)
    AssistantContent = _content(AssistantPart)
    ToolContent = _content(TextPart)


class SystemMessage(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    role: Literal["system", "developer"]
    content: SystemContent


class UserMessage(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    role: Literal["user"]
    content: UserContent


class FunctionCall(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    name: Text
    arguments: Text


class ToolCall(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    id: Text
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    role: Literal["assistant"]
    content: NotRequired[AssistantContent | None]
    tool_calls: NotRequired[list[ToolCall] | None]
    function_call: NotRequired[FunctionCall | None]


class ToolMessage(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    role: Literal["tool"]
    tool_call_id: Text
    content: ToolContent


class FunctionMessage(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    role: Literal["function"]
    name: Text
    content: NotRequired[Text | None]


if TYPE_CHECKING:
    ChatMessage = dict[str, Any]
else:
    ChatMessage = _tagged(
        "role",
        {
            "system": SystemMessage,
            "developer": SystemMessage,
            "user": UserMessage,
            "assistant": AssistantMessage,
            "tool": ToolMessage,
            "function": FunctionMessage,
        },
        "role_tag",
    )


class FunctionDefinition(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    name: Annotated[str, Strict(), Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: NotRequired[Text | None]
    parameters: NotRequired[dict[str, Any] | None]
    strict: NotRequired[Bool | None]


class FunctionTool(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    type: Literal["function"]
    function: FunctionDefinition


class StreamOptions(TypedDict):
    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    include_usage: NotRequired[Bool | None]


class ChatCompletionRequest(TypedDict):
    """The fields of ``POST /v1/chat/completions`` that this layer reads."""

    __pydantic_config__ = _LENIENT  # type: ignore[misc]
    model: Text
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: NotRequired[Annotated[Int, Field(ge=1)] | None]
    max_tokens: NotRequired[Annotated[Int, Field(ge=1)] | None]
    n: NotRequired[Int | None]
    parallel_tool_calls: NotRequired[Bool | None]
    stop: NotRequired[Text | list[Text] | None]
    stream: NotRequired[Bool | None]
    stream_options: NotRequired[StreamOptions | None]
    temperature: NotRequired[Annotated[Number, Field(ge=0)] | None]
    top_p: NotRequired[Annotated[Number, Field(ge=0, le=1)] | None]
    tools: NotRequired[list[FunctionTool] | None]
    tool_choice: NotRequired[Literal["none", "auto", "required"] | dict[str, Any] | None]
    functions: NotRequired[list[FunctionDefinition] | None]
    function_call: NotRequired[Literal["none", "auto"] | dict[str, Any] | None]
    thinking: NotRequired[dict[str, Any] | None]


CHAT_REQUEST: TypeAdapter[ChatCompletionRequest] = TypeAdapter(ChatCompletionRequest)


# -- errors, in OpenAI's words -------------------------------------------------------


def bad_request(message: str, param: str | None, code: str | None = None) -> ApiError:
    return ApiError("invalid_request_error", message, param=param, code=code)


def param_path(loc: tuple[Any, ...]) -> str:
    """``messages[0].content[1].type`` from pydantic's location."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith(_HIDDEN):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a decimal",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "content_type": "one of a string or array of objects",
}


def _quoted_list(values: list[Any]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def _expected_literals(ctx: dict[str, Any]) -> list[str]:
    return re.findall(r"'([^']*)'", str(ctx.get("expected") or ""))


def openai_validation_error(exc: ValidationError) -> ApiError:
    err = exc.errors(include_url=False)[0]
    kind, loc, value = err["type"], tuple(err["loc"]), err.get("input")
    ctx = err.get("ctx") or {}
    if kind in _TAG_ERRORS:
        key, supported = _TAG_ERRORS[kind]
        if not isinstance(value, dict):
            param = param_path(loc)
            return bad_request(
                f"Invalid type for '{param}': expected an object, but got {_json_kind(value)} instead.",
                param,
                "invalid_type",
            )
        param = param_path((*loc, key))
        if key not in value:
            return bad_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
        return bad_request(
            f"Invalid value: '{value[key]}'. Supported values are: {_quoted_list(supported)}.", param, "invalid_value"
        )
    param = param_path(loc)
    if kind == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if kind in _EXPECTED:
        return bad_request(
            f"Invalid type for '{param}': expected {_EXPECTED[kind]}, but got {_json_kind(value)} instead.",
            param,
            "invalid_type",
        )
    if kind == "literal_error":
        listed = _quoted_list(_expected_literals(ctx))
        return bad_request(f"Invalid value: '{value}'. Supported values are: {listed}.", param, "invalid_value")
    if kind == "too_short" and isinstance(value, list):
        return bad_request(
            f"Invalid '{param}': empty array. Expected an array with minimum length {ctx.get('min_length', 1)}, "
            "but got an empty array instead.",
            param,
            "empty_array",
        )
    if kind in ("greater_than_equal", "less_than_equal"):
        number = "integer" if isinstance(value, int) else "decimal"
        if kind == "greater_than_equal":
            limit, side, op, code = ctx.get("ge"), "below minimum", ">=", f"{number}_below_min_value"
        else:
            limit, side, op, code = ctx.get("le"), "above maximum", "<=", f"{number}_above_max_value"
        return bad_request(
            f"Invalid '{param}': {number} {side} value. Expected a value {op} {limit:g}, but got {value} instead.",
            param,
            code,
        )
    if kind == "string_pattern_mismatch":
        return bad_request(
            f"Invalid '{param}': string does not match pattern. Expected a string that matches the pattern "
            f"'{ctx.get('pattern')}'.",
            param,
            "invalid_value",
        )
    return bad_request(f"Invalid '{param}': {err['msg']}.", param)


# Where an error of the Messages validator points, in chat.completions terms.
_PARAM_OF = {
    "model": "model",
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "stop_sequences": "stop",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "thinking": "thinking",
    "messages": "messages",
    "system": "messages",
}


def _from_messages_error(exc: ApiError, max_tokens_param: str | None, functions: bool) -> ApiError:
    head = exc.message.split(":", 1)[0].split(".", 1)[0]
    param = _PARAM_OF.get(head)
    if param == "max_tokens" and max_tokens_param:
        param = max_tokens_param
    if param == "tools" and functions:
        param = "functions"
    message = exc.message
    if param not in (None, "messages", head):
        message = param + message[len(head) :]  # name the field as the client sent it
    code = "model_not_found" if exc.status == 404 and param == "model" else exc.code
    return ApiError(exc.error_type, message, status=exc.status, headers=exc.headers, param=param, code=code)


# -- request translation ------------------------------------------------------------


@dataclass(slots=True)
class ChatRequest:
    """A chat.completions request made into a validated Messages request, and what the
    answer needs to know about how it was asked."""

    validated: ValidatedRequest
    stream: bool = False
    include_usage: bool = False
    functions: bool = False  # asked with the deprecated `functions`: answer with `function_call`


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part["type"] == "text")


_DATA_URL = re.compile(r"^data:([^;,]*)(;[^,]*)?,(.*)$", re.S)
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _image_block(part: ImagePart, where: str) -> dict[str, Any]:
    url = part["image_url"]["url"]
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if match is None or ";base64" not in (match.group(2) or ""):
            raise bad_request(
                f"Invalid '{where}.image_url.url': a data URL must be of the form data:<media type>;base64,<data>.",
                f"{where}.image_url.url",
                "invalid_value",
            )
        media_type = match.group(1).lower()
        if media_type not in _IMAGE_TYPES:
            raise bad_request(
                f"Invalid '{where}.image_url.url': unsupported image type '{media_type}'. Supported types are: "
                f"{_quoted_list(list(_IMAGE_TYPES))}.",
                f"{where}.image_url.url",
                "invalid_value",
            )
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": match.group(3)}}
    if not url.startswith(("http://", "https://")):
        raise bad_request(
            f"Invalid '{where}.image_url.url': expected an http(s) URL or a base64 data URL.",
            f"{where}.image_url.url",
            "invalid_value",
        )
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_parts(content: list[Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if part["type"] == "text":
            if part["text"]:
                blocks.append({"type": "text", "text": part["text"]})
        elif part["type"] == "image_url":
            blocks.append(_image_block(part, f"{where}.content[{j}]"))
    if not blocks:
        raise bad_request(
            f"Invalid '{where}.content': it has no text or image_url part with content.",
            f"{where}.content",
            "invalid_value",
        )
    return blocks


def _arguments(arguments: str, where: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise bad_request(
            f"Invalid '{where}.arguments': expected a JSON object encoded as a string.",
            f"{where}.arguments",
            "invalid_value",
        )
    return value


_TOOL_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def _tool_id(openai_id: str) -> str:
    # Anthropic's ids are [a-zA-Z0-9_-]+; the same mapping is applied to a call and to
    # the tool message answering it, so they still match.
    return _TOOL_ID_CHARS.sub("_", openai_id) or "_"


def _tool_schema(parameters: dict[str, Any] | None, where: str) -> dict[str, Any]:
    if parameters is None:
        return {"type": "object", "properties": {}}
    kind = parameters.get("type", "object")
    if kind != "object":
        raise bad_request(
            f"Invalid '{where}.parameters': the schema must be of type 'object', not {kind!r}.",
            f"{where}.parameters",
            "invalid_value",
        )
    return {**parameters, "type": "object"}


def _tool(definition: FunctionDefinition, where: str) -> dict[str, Any]:
    tool: dict[str, Any] = {
        "name": definition["name"],
        "input_schema": _tool_schema(definition.get("parameters"), where),
    }
    if definition.get("description"):
        tool["description"] = definition["description"]
    return tool


def _named(choice: dict[str, Any], param: str, nested: bool) -> str:
    """The function name of a named tool_choice (``nested``) or function_call."""
    holder = choice.get("function") if nested else choice
    name = holder.get("name") if isinstance(holder, dict) else None
    if nested and choice.get("type") != "function":
        raise bad_request(
            f"Invalid value: '{choice.get('type')}'. Supported values are: 'function'.",
            f"{param}.type",
            "invalid_value",
        )
    if not isinstance(name, str) or not name:
        where = f"{param}.function.name" if nested else f"{param}.name"
        raise bad_request(f"Missing required parameter: '{where}'.", where, "missing_required_parameter")
    return name


def _tool_choice(chat: ChatCompletionRequest) -> dict[str, Any] | None:
    if chat.get("tools") is not None:
        choice, param, nested = chat.get("tool_choice"), "tool_choice", True
    else:
        choice, param, nested = chat.get("function_call"), "function_call", False
    if choice is None:
        out: dict[str, Any] | None = None
    elif choice == "none":
        return {"type": "none"}
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    else:
        out = {"type": "tool", "name": _named(choice, param, nested)}
    if chat.get("parallel_tool_calls") is False or nested is False:  # a `functions` call is always one
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


class _Turns:
    """Messages in Anthropic's alternation: consecutive turns of one role become one."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, role: str, content: str | list[dict[str, Any]]) -> None:
        if self.items and self.items[-1]["role"] == role:
            last = self.items[-1]
            if isinstance(last["content"], str):
                last["content"] = [{"type": "text", "text": last["content"]}] if last["content"] else []
            last["content"].extend([{"type": "text", "text": content}] if isinstance(content, str) else content)
            if not last["content"]:
                last["content"] = ""
        else:
            self.items.append({"role": role, "content": content})


def _unanswered(open_calls: dict[str, str], index: int) -> ApiError:
    return bad_request(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(open_calls.values())}",
        f"messages[{index}].role",
    )


def _messages(chat: ChatCompletionRequest) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    turns = _Turns()
    open_calls: dict[str, str] = {}  # tool calls of the latest assistant turn not yet answered
    function_calls: dict[str, list[str]] = {}  # name -> ids of unanswered function_calls
    messages = chat["messages"]
    for i, message in enumerate(messages):
        role = message["role"]
        if open_calls and role in ("user", "assistant", "function"):
            raise _unanswered(open_calls, i)
        if role == "system" or role == "developer":
            text = _text_of(message["content"])
            if text:
                system.append(text)
        elif role == "user":
            content = message["content"]
            turns.add("user", content if isinstance(content, str) else _user_parts(content, f"messages[{i}]"))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            content = message.get("content")
            text = _text_of(content) if content is not None else ""
            if text:
                blocks.append({"type": "text", "text": text})
            function_calls = {}
            where = f"messages[{i}]"
            for j, call in enumerate(message.get("tool_calls") or []):
                tool_id = _tool_id(call["id"])
                open_calls[tool_id] = call["id"]
                function = call["function"]
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": tool_id,
                        "name": function["name"],
                        "input": _arguments(function["arguments"], f"{where}.tool_calls[{j}].function"),
                    }
                )
            function = message.get("function_call")
            if function is not None:
                tool_id = f"function_call_{i}"
                function_calls.setdefault(function["name"], []).append(tool_id)
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": tool_id,
                        "name": function["name"],
                        "input": _arguments(function["arguments"], f"{where}.function_call"),
                    }
                )
            if blocks:  # an assistant turn that says nothing is left out
                turns.add("assistant", blocks)
        elif role == "tool":
            tool_id = _tool_id(message["tool_call_id"])
            if tool_id not in open_calls:
                raise bad_request(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceding message with "
                    f"'tool_calls' (no tool call with id '{message['tool_call_id']}').",
                    f"messages[{i}].role",
                )
            del open_calls[tool_id]
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id}
            text = _text_of(message["content"])
            if text:
                result["content"] = text
            turns.add("user", [result])
        else:
            ids = function_calls.get(message["name"])
            if not ids:
                raise bad_request(
                    "Invalid parameter: messages with role 'function' must be a response to a preceding message with "
                    f"a 'function_call' of the function '{message['name']}'.",
                    f"messages[{i}].role",
                )
            result = {"type": "tool_result", "tool_use_id": ids.pop(0)}
            if message.get("content"):
                result["content"] = message["content"]
            turns.add("user", [result])
    if open_calls:
        raise _unanswered(open_calls, len(messages) - 1)
    if not turns.items:
        raise bad_request(
            "Invalid 'messages': there must be at least one user or assistant message besides system messages.",
            "messages",
            "invalid_value",
        )
    return system, turns.items


def _stop_sequences(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    return [s for s in stops if s.strip()]


def translate_request(body: Any, models: ModelResolver) -> ChatRequest:
    """Check a chat.completions body and make it a validated Messages request; raise
    ApiError (OpenAI's wording, ``param`` set) when it is not acceptable."""
    if not isinstance(body, dict):
        raise bad_request(
            f"Invalid type for request body: expected an object, but got {_json_kind(body)} instead.",
            None,
            "invalid_type",
        )
    try:
        chat = CHAT_REQUEST.validate_python(body)
    except ValidationError as exc:
        raise openai_validation_error(exc) from None
    get: Callable[[str], Any] = chat.get  # a TypedDict's get, read loosely
    n = get("n")
    if n is not None and n != 1:
        raise bad_request(f"Invalid 'n': only n=1 is supported, but got {n}.", "n", "invalid_value")
    system, messages = _messages(chat)

    out: dict[str, Any] = {"model": chat["model"], "messages": messages}
    if get("max_completion_tokens") is not None:
        out["max_tokens"], max_param = chat["max_completion_tokens"], "max_completion_tokens"
    elif get("max_tokens") is not None:
        out["max_tokens"], max_param = chat["max_tokens"], "max_tokens"
    else:
        out["max_tokens"], max_param = models.max_tokens(chat["model"]) or DEFAULT_MAX_TOKENS, None
    if system:
        out["system"] = "\n".join(system)
    if get("stop") is not None:
        stops = _stop_sequences(chat["stop"])
        if stops:
            out["stop_sequences"] = stops
    temperature = get("temperature")
    if temperature is not None:
        out["temperature"] = min(temperature, 1.0)
    if get("top_p") is not None:
        out["top_p"] = chat["top_p"]
    tools: list[Any] | None = get("tools")
    definitions: list[Any] | None = [t["function"] for t in tools] if tools is not None else get("functions")
    if definitions:
        where = "tools[{}].function" if tools is not None else "functions[{}]"
        out["tools"] = [_tool(d, where.format(k)) for k, d in enumerate(definitions)]
        choice = _tool_choice(chat)
        if choice is not None:  # (a choice without tools has nothing to choose from: dropped)
            out["tool_choice"] = choice
    if get("thinking") is not None:
        out["thinking"] = chat["thinking"]
    stream = bool(get("stream"))
    if stream:
        out["stream"] = True

    functions = tools is None and bool(get("functions"))
    try:
        validated = validate_message_request(out, V2023_06_01, models)
    except ApiError as exc:
        raise _from_messages_error(exc, max_param, functions) from None
    options: dict[str, Any] | None = get("stream_options")
    return ChatRequest(
        validated,
        stream=stream,
        include_usage=bool(stream and options and options.get("include_usage")),
        functions=functions,
    )


# -- responses ------------------------------------------------------------------------

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None, call: ChatRequest) -> str:
    reason = FINISH_REASONS.get(stop_reason or "end_turn", "stop")
    return "function_call" if reason == "tool_calls" and call.functions else reason


def usage(anthropic_usage: dict[str, Any]) -> dict[str, Any]:
    prompt = (
        int(anthropic_usage.get("input_tokens") or 0)
        + int(anthropic_usage.get("cache_creation_input_tokens") or 0)
        + int(anthropic_usage.get("cache_read_input_tokens") or 0)
    )
    completion = int(anthropic_usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


def chat_completion(message: dict[str, Any], call: ChatRequest, created: int | None = None) -> dict[str, Any]:
    """The ``chat.completion`` object for a Message."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message["content"]:
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            arguments = orjson.dumps(block["input"]).decode()
            calls.append(
                {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}
            )
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
        "audio": None,
    }
    if calls and call.functions:
        reply["function_call"] = calls[0]["function"]
    elif calls:
        reply["tool_calls"] = calls
    return {
        "id": message["id"],
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": message["model"],
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(message["stop_reason"], call),
            }
        ],
        "usage": usage(message["usage"]),
        "service_tier": None,
        "system_fingerprint": None,
    }


@dataclass
class ChunkStream:
    """Anthropic stream events in, ``chat.completion.chunk`` objects out.

    ``feed`` returns the chunks an event makes (none for most events), or None for a
    ``ping``, which the route sends on as an SSE comment to keep the connection alive."""

    call: ChatRequest
    created: int = field(default_factory=lambda: int(time.time()))
    id: str = ""
    model: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None
    tool_calls: dict[int, int] = field(default_factory=dict)  # block index -> tool call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "service_tier": None,
            "system_fingerprint": None,
        }
        if self.call.include_usage:
            chunk["usage"] = None  # every chunk but the last, as OpenAI sends them
        return chunk

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]] | None:
        kind = event["type"]
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                return [self._chunk({"content": delta["text"]})] if delta["text"] else []
            position = self.tool_calls.get(event["index"])
            if delta["type"] == "input_json_delta" and delta["partial_json"] and position is not None:
                if not self.call.functions:
                    return [
                        self._chunk(
                            {"tool_calls": [{"index": position, "function": {"arguments": delta["partial_json"]}}]}
                        )
                    ]
                if position == 0:
                    return [self._chunk({"function_call": {"arguments": delta["partial_json"]}})]
            return []
        if kind == "ping":
            return None
        if kind == "message_start":
            message = event["message"]
            self.id, self.model = message["id"], message["model"]
            self.usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event["content_block"]
            if block["type"] != "tool_use":
                return []
            position = len(self.tool_calls)
            self.tool_calls[event["index"]] = position
            if self.call.functions:
                if position > 0:
                    return []  # `function_call` carries one call
                return [self._chunk({"function_call": {"name": block["name"], "arguments": ""}})]
            call = {
                "index": position,
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            for key, value in (event.get("usage") or {}).items():
                if value is not None:
                    self.usage[key] = value
            return []
        if kind == "message_stop":
            return self.finish()
        return []

    def finish(self) -> list[dict[str, Any]]:
        chunks = [self._chunk({}, finish_reason(self.stop_reason, self.call))]
        if self.call.include_usage:
            last = self._chunk({})
            last["choices"] = []
            last["usage"] = usage(self.usage)
            chunks.append(last)
        return chunks
