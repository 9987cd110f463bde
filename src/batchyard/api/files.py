"""Routes of the Files APIs, Anthropic's and OpenAI's, on the same paths and the same store.

Which API a request speaks is the middleware's call (``surfaces.py``: ``anthropic-version``
present means Anthropic's); each route reads the surface to pick the wire shape and the
error envelope. Uploads stream: multipart parts go to the store chunk by chunk, capped
while they arrive, and nothing is visible until the whole body has been read and checked.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..protocol import files as wire
from ..protocol.errors import invalid_request
from ..protocol.files import FileProblem, FileTooLarge
from .batches import parse_limit
from .multipart import MultipartForm
from .responses import json_response
from .state import services
from .surfaces import Surface, surface_of

MULTIPART_SLACK = 1024 * 1024  # boundaries and small fields around the file's own bytes
MAX_IDS = 100

Handler = Callable[[Request], Awaitable[Response]]


def _in_its_api(route: Handler) -> Handler:
    """File errors in the words of the API the request came through."""

    @functools.wraps(route)
    async def wrapped(request: Request) -> Response:
        try:
            return await route(request)
        except FileProblem as exc:
            if surface_of(request.scope) is Surface.OPENAI:
                raise exc.openai() from None
            raise

    return wrapped


def _workspace(request: Request) -> str:
    return request.scope["state"]["workspace_id"]


def _openai(request: Request) -> bool:
    return surface_of(request.scope) is Surface.OPENAI


@_in_its_api
async def upload_file(request: Request) -> Response:
    svc = services(request)
    limits = svc.settings.files
    openai = _openai(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_file_bytes + MULTIPART_SLACK:
        raise FileTooLarge(limits.max_file_bytes)
    form = MultipartForm(request, svc.settings.limits.body_timeout)
    fields: dict[str, str] = {}
    async with svc.files.upload(_workspace(request)) as upload:
        async for part in form.parts():
            if part.name != "file":
                fields[part.name] = await part.text()
                if openai and part.name == "purpose":
                    _check_purpose(fields["purpose"])
                continue
            checker = None
            if openai and fields.get("purpose") == "batch":
                # The purpose came first (as the SDKs send it): check the lines as they stream.
                checker = svc.files.jsonl_checker()
                upload.limit = min(upload.limit, limits.batch_max_bytes)
            await upload.receive(
                part.data(),
                filename=part.filename,
                declared_type=part.content_type,
                observe=None if checker is None else checker.feed,
            )
            if checker is not None:
                checker.finish()
                problem = checker.problem()
                if problem is not None:
                    raise problem
                upload.checked = True
        if not upload.received:
            raise wire.missing_param("file") if openai else invalid_request("file: Field required")
        if openai:
            purpose = fields.get("purpose")
            if purpose is None:
                raise wire.missing_param("purpose")
            _check_purpose(purpose)
            record = await upload.commit(
                purpose=purpose,
                downloadable=True,
                ttl=_openai_ttl(fields, limits.batch_ttl if purpose == "batch" else limits.default_ttl),
                check_jsonl=purpose == "batch",
            )
            return json_response(wire.openai_file(record))
        ttl: float | None = limits.default_ttl or None
        if "expires_in_seconds" in fields:
            ttl = wire.ttl_seconds(fields["expires_in_seconds"], "expires_in_seconds", wire.ANTHROPIC_TTL_RANGE)
        record = await upload.commit(purpose=wire.ANTHROPIC_PURPOSE, downloadable=limits.downloadable_uploads, ttl=ttl)
        return json_response(wire.anthropic_file(record))


def _check_purpose(purpose: str) -> None:
    if purpose not in wire.OPENAI_PURPOSES:
        allowed = ", ".join(f"'{p}'" for p in wire.OPENAI_PURPOSES)
        raise wire.invalid_param("purpose", f"'{purpose}' is not one of [{allowed}] - 'purpose'")


def _openai_ttl(fields: dict[str, str], default: float) -> float | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return default or None
    if anchor != "created_at":
        raise wire.invalid_param("expires_after.anchor", "expires_after.anchor: the only anchor is 'created_at'")
    if seconds is None:
        raise wire.missing_param("expires_after.seconds")
    return wire.ttl_seconds(seconds, "expires_after.seconds", wire.OPENAI_TTL_RANGE)


@_in_its_api
async def list_files(request: Request) -> Response:
    svc = services(request)
    query = request.query_params
    if _openai(request):
        limit = _openai_limit(query.get("limit"))
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise wire.invalid_param("order", f"'{order}' is not one of ['asc', 'desc'] - 'order'")
        records, has_more = await svc.files.list(
            _workspace(request),
            limit,
            after_id=query.get("after") or None,
            ascending=order == "asc",
            purpose=query.get("purpose") or None,
        )
        return json_response(wire.openai_page([wire.openai_file(r) for r in records], has_more))
    ids = query.getlist("ids[]") + query.getlist("ids")
    after_id = query.get("after_id") or None
    if ids:
        if "page" in query or "limit" in query:
            raise invalid_request("ids: cannot be combined with page or limit")
        unique = list(dict.fromkeys(ids))
        if len(unique) > MAX_IDS:
            raise invalid_request(f"ids: at most {MAX_IDS} ids")
        records, _ = await svc.files.list(_workspace(request), MAX_IDS, ids=unique)
        return json_response(wire.anthropic_page([wire.anthropic_file(r) for r in records], False))
    if query.get("page"):
        after_id = wire.parse_page_token(query["page"])
    records, has_more = await svc.files.list(
        _workspace(request), parse_limit(query.get("limit")), after_id=after_id, before_id=query.get("before_id") or None
    )
    return json_response(wire.anthropic_page([wire.anthropic_file(r) for r in records], has_more))


def _openai_limit(raw: str | None) -> int:
    if raw is None:
        return 10_000
    try:
        limit = int(raw)
    except ValueError:
        raise wire.invalid_param("limit", f"'{raw}' is not a valid integer - 'limit'") from None
    if not 1 <= limit <= 10_000:
        raise wire.invalid_param("limit", "limit must be between 1 and 10000 - 'limit'")
    return limit


@_in_its_api
async def retrieve_file(request: Request) -> Response:
    record = await services(request).files.get(_workspace(request), request.path_params["file_id"])
    return json_response(wire.openai_file(record) if _openai(request) else wire.anthropic_file(record))


@_in_its_api
async def file_content(request: Request) -> Response:
    content = await services(request).files.download(_workspace(request), request.path_params["file_id"])
    record = content.record
    return StreamingResponse(
        content,
        media_type=record.mime_type,
        headers={
            "content-length": str(record.size_bytes),
            "content-disposition": wire.content_disposition(record.filename),
        },
    )


@_in_its_api
async def delete_file(request: Request) -> Response:
    file_id = request.path_params["file_id"]
    await services(request).files.delete(_workspace(request), file_id)
    return json_response(wire.openai_deleted(file_id) if _openai(request) else wire.anthropic_deleted(file_id))


routes = [
    Route("/v1/files", upload_file, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", retrieve_file, methods=["GET"]),
    Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
]
