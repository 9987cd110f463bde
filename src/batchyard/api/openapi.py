"""The OpenAPI 3.1 document of this server's own API, served at ``/openapi.json``.

Request bodies of the Messages API come straight from the validator's pydantic models,
so the document cannot drift from what the server accepts; the response shapes are those
of ``protocol/`` (and of the official SDKs' types). Tests run schemathesis against it.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pydantic import TypeAdapter

from .. import __version__
from ..protocol.batch_create import CUSTOM_ID_PATTERN
from ..protocol.complete import CompletionRequest
from ..protocol.messages import CountTokensRequest, MessageCreateRequest
from ..protocol.openai_batches import ENDPOINTS as OPENAI_BATCH_ENDPOINTS
from ..protocol.openai_chat import CHAT_REQUEST
from ..protocol.versions import SUPPORTED_VERSIONS

REF = "#/components/schemas/{model}"  # pydantic's ref_template form


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


TIMESTAMP = {"type": "string", "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "ErrorResponse": {
        "type": "object",
        "required": ["type", "error", "request_id"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
            "request_id": _nullable({"type": "string"}),
        },
    },
    "OpenAIErrorResponse": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": _nullable({"type": "string"}),
                    "code": _nullable({"type": "string"}),
                },
            },
        },
    },
    "RequestCounts": {
        "type": "object",
        "required": ["processing", "succeeded", "errored", "canceled", "expired"],
        "properties": {k: {"type": "integer", "minimum": 0} for k in ("processing", "succeeded", "errored", "canceled", "expired")},
        "additionalProperties": False,
    },
    "MessageBatch": {
        "type": "object",
        "required": [
            "id", "type", "processing_status", "request_counts", "ended_at", "created_at", "expires_at",
            "archived_at", "cancel_initiated_at", "results_url",
        ],
        "properties": {
            "id": {"type": "string", "pattern": "^msgbatch_"},
            "type": {"const": "message_batch"},
            "processing_status": {"enum": ["in_progress", "canceling", "ended"]},
            "request_counts": _ref("RequestCounts"),
            "ended_at": _nullable(TIMESTAMP),
            "created_at": TIMESTAMP,
            "expires_at": TIMESTAMP,
            "archived_at": _nullable(TIMESTAMP),
            "cancel_initiated_at": _nullable(TIMESTAMP),
            "results_url": _nullable({"type": "string"}),
        },
        "additionalProperties": False,
    },
    "MessageBatchList": {
        "type": "object",
        "required": ["data", "has_more", "first_id", "last_id"],
        "properties": {
            "data": {"type": "array", "items": _ref("MessageBatch")},
            "has_more": {"type": "boolean"},
            "first_id": _nullable({"type": "string"}),
            "last_id": _nullable({"type": "string"}),
        },
    },
    "OpenAIBatch": {
        "type": "object",
        "required": [
            "id", "object", "endpoint", "model", "errors", "input_file_id", "completion_window", "status",
            "output_file_id", "error_file_id", "created_at", "in_progress_at", "expires_at", "finalizing_at",
            "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at", "request_counts", "usage",
            "metadata",
        ],
        "properties": {
            "id": {"type": "string", "pattern": "^batch_"},
            "object": {"const": "batch"},
            "endpoint": {"enum": list(OPENAI_BATCH_ENDPOINTS)},
            "model": _nullable({"type": "string"}),
            "errors": _nullable({
                "type": "object",
                "required": ["object", "data"],
                "properties": {
                    "object": {"const": "list"},
                    "data": {"type": "array", "items": {
                        "type": "object",
                        "required": ["code", "line", "message", "param"],
                        "properties": {
                            "code": {"type": "string"}, "line": _nullable({"type": "integer"}),
                            "message": {"type": "string"}, "param": _nullable({"type": "string"}),
                        },
                    }},
                },
            }),
            "input_file_id": {"type": "string"},
            "completion_window": {"const": "24h"},
            "status": {"enum": ["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"]},
            "output_file_id": _nullable({"type": "string"}),
            "error_file_id": _nullable({"type": "string"}),
            **{name: _nullable({"type": "integer"}) for name in (
                "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at",
            )},
            "created_at": {"type": "integer"},
            "expires_at": {"type": "integer"},
            "request_counts": {
                "type": "object",
                "required": ["total", "completed", "failed"],
                "properties": {k: {"type": "integer", "minimum": 0} for k in ("total", "completed", "failed")},
                "additionalProperties": False,
            },
            "usage": _nullable({
                "type": "object",
                "required": ["input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details", "total_tokens"],
            }),
            "metadata": _nullable({"type": "object", "additionalProperties": {"type": "string"}}),
        },
        "additionalProperties": False,
    },
    "OpenAIBatchList": {
        "type": "object",
        "required": ["object", "data", "first_id", "last_id", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("OpenAIBatch")},
            "first_id": _nullable({"type": "string"}),
            "last_id": _nullable({"type": "string"}),
            "has_more": {"type": "boolean"},
        },
    },
    "CreateOpenAIBatchRequest": {
        "type": "object",
        "required": ["input_file_id", "endpoint", "completion_window"],
        "properties": {
            "input_file_id": {"type": "string"},
            "endpoint": {"enum": list(OPENAI_BATCH_ENDPOINTS)},
            "completion_window": {"const": "24h"},
            "metadata": _nullable({"type": "object", "maxProperties": 16, "additionalProperties": {"type": "string", "maxLength": 512}}),
            "output_expires_after": {
                "type": "object",
                "required": ["anchor", "seconds"],
                "properties": {
                    "anchor": {"const": "created_at"},
                    "seconds": {"type": "integer", "minimum": 3600, "maximum": 2_592_000},
                },
            },
        },
    },
    "DeletedMessageBatch": {
        "type": "object",
        "required": ["id", "type"],
        "properties": {"id": {"type": "string"}, "type": {"const": "message_batch_deleted"}},
    },
    "CreateMessageBatchRequest": {
        "type": "object",
        "required": ["requests"],
        "properties": {
            "requests": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100_000,
                "items": {
                    "type": "object",
                    "required": ["custom_id", "params"],
                    "properties": {
                        "custom_id": {"type": "string", "pattern": CUSTOM_ID_PATTERN, "minLength": 1, "maxLength": 64},
                        "params": {
                            "type": "object",
                            "description": "A Messages request; validated when the line is processed.",
                        },
                    },
                    "additionalProperties": False,
                },
            }
        },
        "additionalProperties": False,
    },
    "Usage": {
        "type": "object",
        "required": ["input_tokens", "output_tokens"],
        "properties": {
            "input_tokens": {"type": "integer", "minimum": 0},
            "output_tokens": {"type": "integer", "minimum": 0},
            "cache_creation_input_tokens": _nullable({"type": "integer"}),
            "cache_read_input_tokens": _nullable({"type": "integer"}),
            "service_tier": _nullable({"enum": ["standard", "priority", "batch"]}),
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "type", "role", "content", "model", "stop_reason", "stop_sequence", "usage"],
        "properties": {
            "id": {"type": "string"},
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "content": {"type": "array", "items": {"type": "object", "required": ["type"]}},
            "model": {"type": "string"},
            "stop_reason": _nullable(
                {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal", "model_context_window_exceeded"]}
            ),
            "stop_sequence": _nullable({"type": "string"}),
            "usage": _ref("Usage"),
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "items": {
                    "type": "object",
                    "required": ["index", "message", "finish_reason"],
                    "properties": {
                        "index": {"const": 0},
                        "finish_reason": {"enum": ["stop", "length", "tool_calls", "content_filter", "function_call"]},
                        "message": {
                            "type": "object",
                            "required": ["role", "content"],
                            "properties": {
                                "role": {"const": "assistant"},
                                "content": _nullable({"type": "string"}),
                                "tool_calls": {
                                    "type": "array",
                                    "items": {"type": "object", "required": ["id", "type", "function"]},
                                },
                                "function_call": {"type": "object", "required": ["name", "arguments"]},
                            },
                        },
                    },
                },
            },
            "usage": {
                "type": "object",
                "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
                "properties": {
                    k: {"type": "integer", "minimum": 0} for k in ("prompt_tokens", "completion_tokens", "total_tokens")
                },
            },
        },
    },
    "Completion": {
        "type": "object",
        "required": ["type", "id", "completion", "stop_reason", "model"],
        "properties": {
            "type": {"const": "completion"},
            "id": {"type": "string"},
            "completion": {"type": "string"},
            "stop_reason": _nullable({"enum": ["stop_sequence", "max_tokens"]}),
            "stop": _nullable({"type": "string"}),
            "model": {"type": "string"},
        },
    },
    "CountTokensResponse": {
        "type": "object",
        "required": ["input_tokens"],
        "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
        "additionalProperties": False,
    },
    "ModelInfo": {
        "type": "object",
        "required": ["type", "id", "display_name", "created_at", "lifecycle"],
        "properties": {
            "type": {"const": "model"},
            "id": {"type": "string"},
            "display_name": {"type": "string"},
            "created_at": TIMESTAMP,
            "lifecycle": {"enum": ["active", "deprecated", "retired"]},
            "deprecated_at": _nullable(TIMESTAMP),
            "retires_at": _nullable(TIMESTAMP),
            "line": _nullable({"type": "string"}),
            "max_input_tokens": _nullable({"type": "integer"}),
            "max_tokens": _nullable({"type": "integer"}),
            "capabilities": _nullable({"type": "object"}),
        },
    },
    "OpenAIModel": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    },
    "OpenAIModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("OpenAIModel")}},
    },
    "ModelList": {
        "type": "object",
        "required": ["data", "has_more", "first_id", "last_id"],
        "properties": {
            "data": {"type": "array", "items": _ref("ModelInfo")},
            "has_more": {"type": "boolean"},
            "first_id": _nullable({"type": "string"}),
            "last_id": _nullable({"type": "string"}),
        },
    },
}

SSE_EVENT = {
    "description": "One server-sent event; `data` is the event as JSON, its `type` repeating `event`.",
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {
            "enum": [
                "message_start", "content_block_start", "content_block_delta", "content_block_stop",
                "message_delta", "message_stop", "ping", "error",
            ]
        },
        "data": {"type": "string"},
    },
}

CHUNK_EVENT = {
    "description": "One server-sent event: `data: <chat.completion.chunk as JSON>`, the last one `data: [DONE]`.",
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}},
}
COMPLETION_EVENT = {
    "description": "One server-sent event; `data` is the event as JSON, its `type` repeating `event`.",
    "type": "object",
    "required": ["event", "data"],
    "properties": {"event": {"enum": ["completion", "ping", "error"]}, "data": {"type": "string"}},
}

REQUEST_ID = {"description": "Id of this request", "schema": {"type": "string", "pattern": "^req_"}}
RATE_LIMIT_HEADERS = {
    "anthropic-ratelimit-requests-limit": {"schema": {"type": "string"}},
    "anthropic-ratelimit-requests-remaining": {"schema": {"type": "string"}},
    "anthropic-ratelimit-requests-reset": {"schema": {"type": "string"}},
}


OPENAI_RATE_LIMIT_HEADERS = {
    "x-ratelimit-limit-requests": {"schema": {"type": "string"}},
    "x-ratelimit-remaining-requests": {"schema": {"type": "string"}},
    "x-ratelimit-reset-requests": {"schema": {"type": "string"}},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _responses(ok: dict[str, Any], ok_description: str = "Success") -> dict[str, Any]:
    headers = {"request-id": REQUEST_ID, **RATE_LIMIT_HEADERS}
    return {
        "200": {"description": ok_description, "headers": headers, "content": ok},
        "default": {"description": "An Anthropic error envelope", "headers": headers, "content": _json(_ref("ErrorResponse"))},
    }


V1_HEADERS = [
    {"name": "anthropic-version", "in": "header", "required": True, "schema": {"enum": list(SUPPORTED_VERSIONS)}},
    {"name": "anthropic-beta", "in": "header", "required": False, "schema": {"type": "string"}},
]
BATCH_ID = {"name": "message_batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
OPENAI_BATCH_ID = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
OPENAI_PAGING = [
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
    {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
]
PAGING = [
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}},
    {"name": "after_id", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "before_id", "in": "query", "required": False, "schema": {"type": "string"}},
]


def _operation(operation_id: str, summary: str, ok: dict[str, Any], *, parameters: list[Any] | None = None,
               body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "parameters": [*V1_HEADERS, *(parameters or [])],
        "responses": _responses(ok),
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    return op


def _shared_operation(op: dict[str, Any]) -> dict[str, Any]:
    """An operation both APIs share (``/v1/models``): the anthropic-version header is optional,
    and its absence selects OpenAI's shape (api/surfaces.py)."""
    op["parameters"] = [{**p, "required": False} if p["name"] == "anthropic-version" else p for p in op["parameters"]]
    op["responses"]["default"] = {
        "description": "An Anthropic error envelope, or OpenAI's when no anthropic-version is sent",
        "headers": op["responses"]["default"]["headers"],
        "content": _json({"oneOf": [_ref("ErrorResponse"), _ref("OpenAIErrorResponse")]}),
    }
    return op


def _openai_operation(
    operation_id: str, summary: str, ok: dict[str, Any], body: dict[str, Any] | None = None,
    parameters: list[Any] | None = None,
) -> dict[str, Any]:
    """An operation of the OpenAI surface: no anthropic-version, OpenAI's error envelope
    and rate-limit header names."""
    headers = {"request-id": REQUEST_ID, "x-request-id": REQUEST_ID, **OPENAI_RATE_LIMIT_HEADERS}
    return {
        "operationId": operation_id,
        "summary": summary,
        "parameters": parameters or [],
        **({"requestBody": {"required": True, "content": _json(body)}} if body is not None else {}),
        "responses": {
            "200": {"description": "Success", "headers": headers, "content": ok},
            "default": {
                "description": "An OpenAI error envelope",
                "headers": headers,
                "content": _json(_ref("OpenAIErrorResponse")),
            },
        },
    }


def _pydantic_schema(model: Any, schemas: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The schema of a pydantic model (or of a TypeAdapter, named ``name``)."""
    if isinstance(model, TypeAdapter):
        generated = model.json_schema(ref_template=REF)
    else:
        generated, name = model.model_json_schema(ref_template=REF), model.__name__
    for key, definition in generated.pop("$defs", {}).items():
        schemas.setdefault(key, definition)
    assert name is not None
    schemas[name] = generated
    return _ref(name)


@cache
def _document() -> dict[str, Any]:
    schemas = copy.deepcopy(SCHEMAS)
    create_message = _pydantic_schema(MessageCreateRequest, schemas)
    count_tokens = _pydantic_schema(CountTokensRequest, schemas)
    create_completion = _pydantic_schema(CompletionRequest, schemas)
    create_chat_completion = _pydantic_schema(CHAT_REQUEST, schemas, "ChatCompletionRequest")
    paths: dict[str, Any] = {
        "/v1/messages/batches": {
            "post": _operation("createMessageBatch", "Create a Message Batch", _json(_ref("MessageBatch")),
                               body=_ref("CreateMessageBatchRequest")),
            "get": _operation("listMessageBatches", "List Message Batches, newest first", _json(_ref("MessageBatchList")),
                              parameters=PAGING),
        },
        "/v1/messages/batches/{message_batch_id}": {
            "get": _operation("retrieveMessageBatch", "Retrieve a Message Batch", _json(_ref("MessageBatch")),
                              parameters=[BATCH_ID]),
            "delete": _operation("deleteMessageBatch", "Delete an ended Message Batch", _json(_ref("DeletedMessageBatch")),
                                 parameters=[BATCH_ID]),
        },
        "/v1/messages/batches/{message_batch_id}/cancel": {
            "post": _operation("cancelMessageBatch", "Cancel a Message Batch", _json(_ref("MessageBatch")),
                               parameters=[BATCH_ID]),
        },
        "/v1/messages/batches/{message_batch_id}/results": {
            "get": _operation("messageBatchResults", "The results of an ended batch, as JSON Lines",
                              {"application/x-jsonl": {"schema": {"type": "string"}}}, parameters=[BATCH_ID]),
        },
        "/v1/messages": {
            "post": _operation(
                "createMessage",
                "Create a Message (SSE with stream: true)",
                {**_json(_ref("Message")), "text/event-stream": {"schema": SSE_EVENT}},
                body=create_message,
            ),
        },
        "/v1/messages/count_tokens": {
            "post": _operation("countMessageTokens", "Count the input tokens of a Messages request",
                               _json(_ref("CountTokensResponse")), body=count_tokens),
        },
        "/v1/complete": {
            "post": _operation(
                "createCompletion",
                "Create a Text Completion (legacy; SSE with stream: true)",
                {**_json(_ref("Completion")), "text/event-stream": {"schema": COMPLETION_EVENT}},
                body=create_completion,
            ),
        },
        "/v1/chat/completions": {
            "post": _openai_operation(
                "createChatCompletion",
                "OpenAI SDK compatibility: create a chat completion (SSE with stream: true)",
                {**_json(_ref("ChatCompletion")), "text/event-stream": {"schema": CHUNK_EVENT}},
                create_chat_completion,
            ),
        },
        "/v1/batches": {
            "post": _openai_operation("createBatch", "OpenAI's Batch API: create a batch from an input file",
                                      _json(_ref("OpenAIBatch")), _ref("CreateOpenAIBatchRequest")),
            "get": _openai_operation("listBatches", "OpenAI's Batch API: list batches, newest first",
                                     _json(_ref("OpenAIBatchList")), parameters=OPENAI_PAGING),
        },
        "/v1/batches/{batch_id}": {
            "get": _openai_operation("retrieveBatch", "OpenAI's Batch API: retrieve a batch", _json(_ref("OpenAIBatch")),
                                     parameters=[OPENAI_BATCH_ID]),
        },
        "/v1/batches/{batch_id}/cancel": {
            "post": _openai_operation("cancelBatch", "OpenAI's Batch API: cancel a batch", _json(_ref("OpenAIBatch")),
                                      parameters=[OPENAI_BATCH_ID]),
        },
        "/v1/models": {
            "get": _shared_operation(_operation(
                "listModels", "List the named models (OpenAI's list shape when no anthropic-version is sent)",
                _json({"oneOf": [_ref("ModelList"), _ref("OpenAIModelList")]}), parameters=PAGING,
            )),
        },
        "/v1/models/{model_id}": {
            "get": _shared_operation(_operation(
                "retrieveModel", "Retrieve a model (OpenAI's Model shape when no anthropic-version is sent)",
                _json({"oneOf": [_ref("ModelInfo"), _ref("OpenAIModel")]}),
                parameters=[{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            )),
        },
        "/health": {
            "get": {"operationId": "health", "summary": "Liveness", "security": [],
                    "responses": {"200": {"description": "Up", "content": _json({"type": "object"})}}},
        },
        "/health/ready": {
            "get": {"operationId": "ready", "summary": "Readiness: the database answers", "security": [],
                    "responses": {"200": {"description": "Ready", "content": _json({"type": "object"})},
                                  "503": {"description": "Database unavailable", "content": _json({"type": "object"})}}},
        },
        "/metrics": {
            "get": {"operationId": "metrics", "summary": "Prometheus metrics", "security": [],
                    "responses": {"200": {"description": "Text exposition format",
                                          "content": {"text/plain": {"schema": {"type": "string"}}}}}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "batchyard",
            "version": __version__,
            "description": (
                "Anthropic's Message Batches and Messages APIs, self-hosted, with legacy Text Completions, "
                "the OpenAI SDK compatibility layer (/v1/chat/completions) and OpenAI's Batch API (/v1/batches)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"ApiKey": []}, {"Bearer": []}],
    }


def openapi_document() -> dict[str, Any]:
    return copy.deepcopy(_document())
