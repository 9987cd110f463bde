"""The Messages request body, and the one validator every entry point uses.

``POST /v1/messages``, ``POST /v1/messages/count_tokens`` and each batch line at
processing time go through :func:`validate_message_request`. The models mirror the
API's schema (extra keys forbidden) so that pydantic's own wording gives the API's
``<dotted.path>: <message>`` errors. Union branches that the API does not show in its
paths (string-or-blocks, custom tools, message roles) carry hidden tags that are
dropped from the path; content-block and server-tool unions keep their type tag, as the
API's own paths do (``messages.5.content.0.text.cache_control``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from .errors import MAX_ECHO, ApiError, bounded, invalid_request, not_found
from .versions import V2026_10_21

_HIDDEN = "§"  # union tags starting with this are not part of the error path


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """Pass-through objects the server does not interpret (server tool payloads)."""

    model_config = ConfigDict(extra="allow")


def _str_or_list(value: Any) -> str | None:
    if isinstance(value, str):
        return f"{_HIDDEN}str"
    if isinstance(value, list):
        return f"{_HIDDEN}list"
    return None


def _string_or_blocks(block_type: Any) -> Any:
    """``str | list[block]`` with a clean error when it is neither."""
    return Annotated[
        Union[
            Annotated[str, Tag(f"{_HIDDEN}str")],
            Annotated[list[block_type], Tag(f"{_HIDDEN}list")],
        ],
        Discriminator(
            _str_or_list,
            custom_error_type="string_or_list",
            custom_error_message="Input should be a valid string or a list of content blocks",
        ),
    ]


# -- shared pieces -----------------------------------------------------------------


class CacheControl(_Model):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class CitationsConfig(_Model):
    enabled: bool | None = None


class Caller(_Open):
    type: str


# -- content blocks ----------------------------------------------------------------


class TextBlock(_Model):
    type: Literal["text"]
    text: str = Field(min_length=1)
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None


class Base64ImageSource(_Model):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class UrlSource(_Model):
    type: Literal["url"]
    url: str


class FileSource(_Model):
    type: Literal["file"]
    file_id: str


ImageSource = Annotated[Union[Base64ImageSource, UrlSource, FileSource], Field(discriminator="type")]


class ImageBlock(_Model):
    type: Literal["image"]
    source: ImageSource
    cache_control: CacheControl | None = None
    transformations: dict[str, Any] | None = None


class Base64PdfSource(_Model):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str


class PlainTextSource(_Model):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


ContentSourceItem = Annotated[Union[TextBlock, ImageBlock], Field(discriminator="type")]


if TYPE_CHECKING:  # what the validating annotations below mean, for the type checker
    SourceContent = str | list[TextBlock | ImageBlock]
else:
    SourceContent = _string_or_blocks(ContentSourceItem)


class ContentBlockSource(_Model):
    type: Literal["content"]
    content: SourceContent


DocumentSource = Annotated[
    Union[Base64PdfSource, PlainTextSource, ContentBlockSource, UrlSource, FileSource],
    Field(discriminator="type"),
]


class DocumentBlock(_Model):
    type: Literal["document"]
    source: DocumentSource
    cache_control: CacheControl | None = None
    citations: CitationsConfig | None = None
    context: str | None = None
    title: str | None = Field(default=None, min_length=1, max_length=500)


class SearchResultBlock(_Model):
    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]
    cache_control: CacheControl | None = None
    citations: CitationsConfig | None = None


class ThinkingBlock(_Model):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(_Model):
    type: Literal["redacted_thinking"]
    data: str


class ToolUseBlock(_Model):
    type: Literal["tool_use"]
    id: str = Field(pattern=r"^[a-zA-Z0-9_-]+$")
    name: str = Field(min_length=1, max_length=200)
    input: dict[str, Any]
    cache_control: CacheControl | None = None
    caller: Caller | None = None
    toolset_name: str | None = None


class ToolReferenceBlock(_Model):
    type: Literal["tool_reference"]
    tool_name: str
    cache_control: CacheControl | None = None


class BrowserStateBlock(_Open):
    type: Literal["browser_state"]


ToolResultItem = Annotated[
    Union[TextBlock, ImageBlock, SearchResultBlock, DocumentBlock, ToolReferenceBlock, BrowserStateBlock],
    Field(discriminator="type"),
]


if TYPE_CHECKING:
    ToolResultContent = str | list[Any]
else:
    ToolResultContent = _string_or_blocks(ToolResultItem)


class ToolResultBlock(_Model):
    type: Literal["tool_result"]
    tool_use_id: str = Field(pattern=r"^[a-zA-Z0-9_-]+$")
    content: ToolResultContent | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None
    toolset_name: str | None = None


class ServerToolUseBlock(_Model):
    type: Literal["server_tool_use"]
    id: str = Field(pattern=r"^srvtoolu_[a-zA-Z0-9_]+$")
    name: Literal[
        "web_search",
        "web_fetch",
        "code_execution",
        "bash_code_execution",
        "text_editor_code_execution",
        "tool_search_tool_regex",
        "tool_search_tool_bm25",
    ]
    input: dict[str, Any]
    cache_control: CacheControl | None = None
    caller: Caller | None = None


class _ServerToolResult(_Open):
    tool_use_id: str
    content: Any


class WebSearchToolResultBlock(_ServerToolResult):
    type: Literal["web_search_tool_result"]


class WebFetchToolResultBlock(_ServerToolResult):
    type: Literal["web_fetch_tool_result"]


class CodeExecutionToolResultBlock(_ServerToolResult):
    type: Literal["code_execution_tool_result"]


class BashCodeExecutionToolResultBlock(_ServerToolResult):
    type: Literal["bash_code_execution_tool_result"]


class TextEditorCodeExecutionToolResultBlock(_ServerToolResult):
    type: Literal["text_editor_code_execution_tool_result"]


class ToolSearchToolResultBlock(_ServerToolResult):
    type: Literal["tool_search_tool_result"]


class ContainerUploadBlock(_Model):
    type: Literal["container_upload"]
    file_id: str
    cache_control: CacheControl | None = None


ContentBlock = Annotated[
    Union[
        TextBlock,
        ImageBlock,
        DocumentBlock,
        SearchResultBlock,
        ThinkingBlock,
        RedactedThinkingBlock,
        ToolUseBlock,
        ToolResultBlock,
        ServerToolUseBlock,
        WebSearchToolResultBlock,
        WebFetchToolResultBlock,
        CodeExecutionToolResultBlock,
        BashCodeExecutionToolResultBlock,
        TextEditorCodeExecutionToolResultBlock,
        ToolSearchToolResultBlock,
        ContainerUploadBlock,
    ],
    Field(discriminator="type"),
]


if TYPE_CHECKING:
    MessageContent = str | list[Any]
    SystemPrompt = str | list[TextBlock]
else:
    MessageContent = _string_or_blocks(ContentBlock)
    SystemPrompt = _string_or_blocks(TextBlock)


class InputMessage(_Model):
    role: Literal["user", "assistant", "system"]
    content: MessageContent

    @model_validator(mode="after")
    def _system_is_text(self) -> InputMessage:
        if self.role == "system" and isinstance(self.content, list):
            for block in self.content:
                if not isinstance(block, TextBlock):
                    raise ValueError("system messages may only contain text blocks")
        return self


# -- tools -------------------------------------------------------------------------

SERVER_TOOL_NAMES: dict[str, str] = {
    "bash_20250124": "bash",
    "code_execution_20250522": "code_execution",
    "code_execution_20250825": "code_execution",
    "code_execution_20260120": "code_execution",
    "code_execution_20260521": "code_execution",
    "memory_20250818": "memory",
    "text_editor_20250124": "str_replace_editor",
    "text_editor_20250429": "str_replace_based_edit_tool",
    "text_editor_20250728": "str_replace_based_edit_tool",
    "web_fetch_20250910": "web_fetch",
    "web_fetch_20260209": "web_fetch",
    "web_fetch_20260309": "web_fetch",
    "web_fetch_20260318": "web_fetch",
    "web_search_20250305": "web_search",
    "web_search_20260209": "web_search",
    "web_search_20260318": "web_search",
    "tool_search_tool_bm25_20251119": "tool_search_tool_bm25",
    "tool_search_tool_regex_20251119": "tool_search_tool_regex",
    "browser_toolset_20260801": "",
    "computer_toolset_20260801": "",
}


class InputSchema(_Open):
    type: Literal["object"]
    properties: dict[str, Any] | None = None
    required: list[str] | None = None


class CustomTool(_Model):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    input_schema: InputSchema
    type: Literal["custom"] | None = None
    description: str | None = None
    cache_control: CacheControl | None = None
    strict: bool | None = None
    eager_input_streaming: bool | None = None
    allowed_callers: list[str] | None = None
    defer_loading: bool | None = None
    input_examples: list[dict[str, Any]] | None = None


class ServerTool(_Open):
    """A versioned server tool (``web_search_20250305`` …): accepted and passed along."""

    type: str
    name: str | None = None
    cache_control: CacheControl | None = None

    @model_validator(mode="after")
    def _name_matches(self) -> ServerTool:
        expected = SERVER_TOOL_NAMES.get(self.type)
        if expected and self.name != expected:
            raise ValueError(f"name should be '{expected}' for tool type '{self.type}'")
        return self


def _tool_tag(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"{_HIDDEN}custom"
    kind = value.get("type")
    if kind is None or kind == "custom":
        return f"{_HIDDEN}custom"
    if isinstance(kind, str) and kind in SERVER_TOOL_NAMES:
        return "server"
    return None


Tool = Annotated[
    Union[Annotated[CustomTool, Tag(f"{_HIDDEN}custom")], Annotated[ServerTool, Tag("server")]],
    Discriminator(
        _tool_tag,
        custom_error_type="tool_type",
        custom_error_message="Input tag does not match any of the expected tags",
    ),
]


class ToolChoiceAuto(_Model):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(_Model):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Model):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(_Model):
    type: Literal["none"]


ToolChoice = Annotated[
    Union[ToolChoiceAuto, ToolChoiceAny, ToolChoiceTool, ToolChoiceNone], Field(discriminator="type")
]


# -- other settings ----------------------------------------------------------------


class ThinkingEnabled(_Model):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1024)
    display: Literal["summarized", "omitted"] | None = None


class ThinkingDisabled(_Model):
    type: Literal["disabled"]


class ThinkingAdaptive(_Model):
    type: Literal["adaptive"]
    display: Literal["summarized", "omitted"] | None = None


class ThinkingBetweenTools(_Model):
    type: Literal["between_tools"]


Thinking = Annotated[
    Union[ThinkingEnabled, ThinkingDisabled, ThinkingAdaptive, ThinkingBetweenTools], Field(discriminator="type")
]


class Metadata(_Model):
    user_id: str | None = Field(default=None, max_length=512)


class JsonOutputFormat(_Model):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Model):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JsonOutputFormat | None = None


class Diagnostics(_Model):
    previous_message_id: str | None = None


class CountTokensRequest(_Model):
    # Field order decides which error is reported first: the API's schema lists fields
    # alphabetically, required ones included.
    messages: list[InputMessage] = Field(min_length=1, max_length=100_000)
    model: str = Field(min_length=1, max_length=256)
    cache_control: CacheControl | None = None
    output_config: OutputConfig | None = None
    system: SystemPrompt | None = None
    thinking: Thinking | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None


class MessageCreateRequest(_Model):
    max_tokens: int = Field(ge=0)
    messages: list[InputMessage] = Field(min_length=1, max_length=100_000)
    model: str = Field(min_length=1, max_length=256)
    cache_control: CacheControl | None = None
    container: str | dict[str, Any] | None = None
    diagnostics: Diagnostics | None = None
    inference_geo: str | None = None
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    speed: Literal["standard", "fast"] | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    system: SystemPrompt | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    thinking: Thinking | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)


# -- the validator -----------------------------------------------------------------


def format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(
        bounded(str(part), MAX_ECHO) for part in loc if not (isinstance(part, str) and part.startswith(_HIDDEN))
    )


def first_error_message(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    message = err["msg"]
    if err["type"] in ("value_error", "assertion_error") and message.startswith(("Value error, ", "Assertion failed, ")):
        message = message.split(", ", 1)[1]
    if err["type"] == "tool_type" and isinstance(err.get("input"), dict):
        expected = ", ".join(f"'{t}'" for t in ["custom", *SERVER_TOOL_NAMES])
        tag = err["input"].get("type")
        shown = repr(tag) if isinstance(tag, str) else f"of type {type(tag).__name__}"
        message = f"Input tag {shown} found using 'type' does not match any of the expected tags: {expected}"
    path = format_loc(tuple(err["loc"]))
    return f"{path}: {message}" if path else message


@dataclass(slots=True)
class ValidatedRequest:
    """A request that passed validation: the typed model and the body as sent."""

    model: MessageCreateRequest | CountTokensRequest
    body: dict[str, Any]
    version: str


def _parse(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise invalid_request("Input should be a valid dictionary or object to extract fields from")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise invalid_request(first_error_message(exc)) from None


MAX_NESTING = 200  # levels of objects and arrays a request may have (the JSON encoder stops at 255)


def nested_too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether ``value`` nests objects and arrays more than ``limit`` levels deep."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def _version_rules(body: dict[str, Any], request: Any, version: str) -> None:
    if version < V2026_10_21:
        return
    for name in ("temperature", "top_p", "top_k"):
        if name in body:
            raise invalid_request(
                f"{name}: Extra inputs are not permitted. `{name}` was removed in anthropic-version "
                f"{V2026_10_21}; sampling uses the model's defaults"
            )
    for i, message in enumerate(request.messages):
        if not isinstance(message.content, list):
            continue
        for j, block in enumerate(message.content):
            if message.role == "assistant" and isinstance(block, DocumentBlock):
                raise invalid_request(
                    f"messages.{i}.content.{j}: document blocks are not allowed in assistant messages "
                    f"in anthropic-version {V2026_10_21}"
                )
            if message.role == "user":
                _no_user_citations(block, f"messages.{i}.content.{j}")


def _no_user_citations(block: Any, where: str) -> None:
    if isinstance(block, TextBlock) and block.citations:
        raise invalid_request(
            f"{where}.citations: citations on user text blocks are not allowed in anthropic-version {V2026_10_21}"
        )
    if isinstance(block, SearchResultBlock):
        for k, inner in enumerate(block.content):
            _no_user_citations(inner, f"{where}.content.{k}")


def _tool_results_match(request: Any) -> None:
    """Each ``tool_result`` must answer a ``tool_use`` of the assistant turn just before it."""
    previous_tool_ids: set[str] = set()
    current_role: str | None = None
    turn_tool_ids: set[str] = set()
    for i, message in enumerate(request.messages):
        if message.role != current_role:
            if current_role == "assistant":
                previous_tool_ids = turn_tool_ids
            elif current_role == "user":
                previous_tool_ids = set()
            current_role = message.role
            turn_tool_ids = set()
        if not isinstance(message.content, list):
            continue
        for j, block in enumerate(message.content):
            if message.role == "assistant" and isinstance(block, (ToolUseBlock, ServerToolUseBlock)):
                turn_tool_ids.add(block.id)
            elif message.role == "user" and isinstance(block, ToolResultBlock):
                if block.tool_use_id not in previous_tool_ids:
                    raise invalid_request(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block.tool_use_id}. Each `tool_result` block must have a corresponding `tool_use` "
                        "block in the previous message."
                    )


def _tool_choice_names_a_tool(request: Any) -> None:
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceTool):
        names = {t.name for t in request.tools or []}
        if choice.name not in names:
            raise invalid_request(f"tool_choice.name: Tool '{choice.name}' not found in provided tools")
    if request.tools:
        seen: set[str] = set()
        for i, tool in enumerate(request.tools):
            if tool.name and tool.name in seen:
                raise invalid_request(f"tools.{i}.name: Tool names must be unique. Duplicate name: {tool.name}")
            if tool.name:
                seen.add(tool.name)


class ModelResolver:
    """What the validator needs to know about models: which exist and their limits."""

    def knows(self, model: str) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def max_tokens(self, model: str) -> int | None:  # pragma: no cover - interface
        raise NotImplementedError


def validate_message_request(
    body: Any,
    version: str,
    models: ModelResolver,
    *,
    in_batch: bool = False,
    count_tokens: bool = False,
) -> ValidatedRequest:
    """Validate a Messages (or count_tokens) body; raise ApiError with the API's message."""
    if isinstance(body, (dict, list)) and nested_too_deep(body):
        raise invalid_request(
            f"The request is nested too deeply: at most {MAX_NESTING} levels of objects and arrays are allowed"
        )
    request = _parse(CountTokensRequest if count_tokens else MessageCreateRequest, body)
    _version_rules(body, request, version)
    _tool_results_match(request)
    _tool_choice_names_a_tool(request)
    if in_batch:
        if request.stream:
            raise invalid_request('"stream=True" is not supported in the Message Batches API')
        if request.max_tokens < 1:
            raise invalid_request("max_tokens: must be greater than or equal to 1")
    if not models.knows(request.model):
        raise not_found(f"model: {request.model}")
    if not count_tokens:
        limit = models.max_tokens(request.model)
        if limit is not None and request.max_tokens > limit:
            raise invalid_request(
                f"max_tokens: {request.max_tokens} > {limit}, which is the maximum allowed number of output "
                f"tokens for {request.model}"
            )
    return ValidatedRequest(request, body, version)


__all__ = [
    "ApiError",
    "CountTokensRequest",
    "MessageCreateRequest",
    "ModelResolver",
    "ValidatedRequest",
    "validate_message_request",
]
