"""Settings: command-line flags, ``BATCHYARD_*`` environment variables and a TOML file.

Precedence is flag, then environment, then file, then default. The file holds server
limits and the model routes::

    public_url = "https://batches.example.com"

    [batches]
    max_requests = 100000      # per batch
    max_bytes = 268435456      # per create body
    ttl = 86400                # seconds until a batch expires
    archive_after = 2505600    # seconds after creation when results go away

    [engine]
    concurrency = 512

    [files]                    # the Files APIs (Anthropic's and OpenAI's /v1/files)
    max_file_bytes = 524288000 # per file
    max_workspace_bytes = 107374182400
    default_ttl = 0            # seconds until an upload expires; 0: kept until deleted
    batch_ttl = 2592000        # OpenAI purpose=batch uploads (30 days, as OpenAI)
    batch_max_lines = 50000    # purpose=batch uploads are checked as JSONL
    batch_max_bytes = 209715200

    [rate_limits]              # for callers with API keys
    requests_per_minute = 6000 # per key
    max_queued_requests = 500000

    [rate_limits.workspaces.research]
    requests_per_minute = 100

    [[models]]
    id = "slow-model"          # an exact model name, a glob pattern, or "*"
    backend = "simulator"
    latency_ms = 150           # backend options sit in the same table

Routes are matched exact names first, then patterns in file order. A file that does not
parse, or names an unknown key, backend or option, is refused with its path, line and key.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .backends import registry
from .backends.llamacpp import BUNDLED_MODEL_ID, bundled_model_path, llamacpp_available
from .protocol import webhooks as hooks
from .protocol.errors import ApiError
from .routes import ListedModel, Prices, Route, route_for

DEFAULT_DATABASE_URL = "sqlite:///batchyard.db"
DAY = 86_400.0


class ConfigError(Exception):
    """A configuration problem, worded for the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchLimits(_Strict):
    max_requests: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    ttl: float = DAY
    archive_after: float = 29 * DAY


class EngineSettings(_Strict):
    concurrency: int = Field(default=512, ge=1)  # requests in hand per engine (above route limits keeps them full)
    lease: float = Field(default=60.0, gt=0)  # seconds a claim stays valid without a heartbeat
    claim_chunk: int = Field(default=512, ge=1)
    poll_interval: float = Field(default=5.0, gt=0)  # idle database poll, the backstop behind wake-ups
    sweep_interval: float = Field(default=5.0, gt=0)  # lease recovery, expiry, cancellation, archiving
    shutdown_grace: float = Field(default=5.0, ge=0)  # seconds in-flight requests get to finish on shutdown
    retry_base: float = Field(default=1.0, ge=0)  # first retry delay (seconds), doubling per attempt
    retry_cap: float = Field(default=60.0, ge=0)  # longest delay between attempts
    max_lease_losses: int = Field(default=3, ge=1)  # lost workers before a request ends errored (a poison line)


class FileLimits(_Strict):
    """The file store behind both Files APIs. Sizes in bytes, times in seconds."""

    max_file_bytes: int = Field(default=500 * 1024 * 1024, ge=1)  # Anthropic's limit per file
    max_workspace_bytes: int = Field(default=100 * 1024**3, ge=0)  # stored bytes per workspace; 0: no cap
    default_ttl: float = Field(default=0, ge=0)  # uploads that ask for no expiry; 0: kept until deleted
    batch_ttl: float = Field(default=30 * DAY, ge=0)  # OpenAI purpose=batch uploads; 0: kept until deleted
    forget_expired_after: float = Field(default=30 * DAY, ge=0)  # an expired file's metadata goes after this
    batch_max_lines: int = Field(default=50_000, ge=1)  # purpose=batch: JSONL lines per file
    batch_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1)  # purpose=batch: bytes per file
    downloadable_uploads: bool = False  # Anthropic uploads can be downloaded (the real API: no)
    sweep_interval: float = Field(default=30.0, gt=0)  # expiry and abandoned-upload cleanup
    abandoned_upload_after: float = Field(default=120.0, gt=0)  # an upload silent this long is dead


class WorkspaceLimits(_Strict):
    requests_per_minute: int | None = Field(default=None, ge=0)  # per key; 0: no limit
    max_queued_requests: int | None = Field(default=None, ge=0)  # requests in unfinished batches; 0: no cap


class RateLimits(_Strict):
    """Limits for callers with API keys (open mode has none). ``workspaces`` overrides them
    per workspace name."""

    requests_per_minute: int = Field(default=6000, ge=0)
    max_queued_requests: int = Field(default=500_000, ge=0)
    workspaces: dict[str, WorkspaceLimits] = Field(default_factory=dict)

    def for_workspace(self, name: str) -> tuple[int, int]:
        own = self.workspaces.get(name)
        rpm = own.requests_per_minute if own and own.requests_per_minute is not None else self.requests_per_minute
        queued = own.max_queued_requests if own and own.max_queued_requests is not None else self.max_queued_requests
        return rpm, queued


class UsageSettings(_Strict):
    batch_discount: float = Field(default=0.5, ge=0, le=1)  # batch lines cost this much less (0.5: half price)


class WebhookDelivery(_Strict):
    """How webhook events are delivered (``[webhook_delivery]``)."""

    allow_private_networks: bool = False  # loopback, private and link-local targets are refused unless set
    max_age: float = Field(default=86400.0, gt=0)  # seconds to keep retrying an event
    timeout: float = Field(default=10.0, gt=0)  # seconds per attempt, connect to last byte of the answer's head
    retry_base: float = Field(default=2.0, gt=0)  # seconds before the first retry; doubled each time (with jitter)
    retry_cap: float = Field(default=3600.0, gt=0)  # seconds between retries at most
    concurrency: int = Field(default=32, ge=1)  # attempts in flight per engine
    per_endpoint: int = Field(default=4, ge=1)  # attempts in flight per endpoint per engine
    poll_interval: float = Field(default=5.0, gt=0)  # seconds between looks when nothing says to look sooner


class WebhookEndpointConfig(_Strict):
    """One ``[[webhooks]]`` table: an endpoint declared in the config file."""

    url: str
    secret: str = Field(max_length=128)
    workspace: str | None = Field(default=None, min_length=1, max_length=128)  # a workspace's name: only its batches
    events: list[str] | None = None  # default: every batch event
    name: str = Field(default="", max_length=256)
    description: str = Field(default="", max_length=4096)


class ServerLimits(_Strict):
    max_message_bytes: int = 32 * 1024 * 1024
    stream_ping_interval: float = Field(default=10.0, gt=0)  # seconds of silence in a stream before a ping
    header_timeout: float = Field(default=10.0, gt=0)  # seconds to receive a request's headers
    body_timeout: float = Field(default=30.0, gt=0)  # seconds of silence allowed while a body arrives


# A route's prices (USD per million tokens) for the cost report, by config key.
PRICE_KEYS = {
    "price_input_per_mtok": "input",
    "price_output_per_mtok": "output",
    "price_cache_write_per_mtok": "cache_write",
    "price_cache_read_per_mtok": "cache_read",
}

# Keys every route understands, whatever its backend.
ROUTE_KEYS = {
    "id",
    "backend",
    "display_name",
    "created_at",
    "max_tokens",
    "max_input_tokens",
    "max_concurrency",
    "max_attempts",
    "models",
    *PRICE_KEYS,
}


def default_routes() -> list[Route]:
    """With no config file: the bundled SmolLM2 by name when its packages are installed,
    and the simulator for every other model name."""
    routes = []
    path = bundled_model_path()
    if path is not None and llamacpp_available():
        routes.append(
            Route(
                id=BUNDLED_MODEL_ID,
                backend="llamacpp",
                options={"model_path": str(path)},
                display_name="SmolLM2 135M Instruct (bundled, runs locally)",
                max_tokens=2048,
                max_input_tokens=2048,
            )
        )
    routes.append(Route(id="*", backend="simulator", options={}, index=len(routes)))
    return routes


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = DEFAULT_DATABASE_URL
    public_url: str | None = None
    config_path: Path | None = None
    batches: BatchLimits = field(default_factory=BatchLimits)
    engine: EngineSettings = field(default_factory=EngineSettings)
    limits: ServerLimits = field(default_factory=ServerLimits)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    files: FileLimits = field(default_factory=FileLimits)
    usage: UsageSettings = field(default_factory=UsageSettings)
    webhook_delivery: WebhookDelivery = field(default_factory=WebhookDelivery)
    webhooks: list[WebhookEndpointConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=default_routes)
    require_keys: bool = False
    # Set for each process of `serve --workers N` (not from the config file): processes that
    # share one SQLite file share rate-limit buckets through it, and notices through the
    # supervisor's relay (PostgreSQL has both already).
    shared_rate_limits: bool = False
    notice_relay_fd: int | None = None

    def route_for(self, model: str) -> Route | None:
        return route_for(self.routes, model)


# -- loading -----------------------------------------------------------------------

_TOP_LEVEL = {
    "public_url", "database_url", "batches", "engine", "limits", "rate_limits", "files", "usage", "models",
    "webhook_delivery", "webhooks",
}  # fmt: skip


_ARRAYS = {"models", "webhooks"}  # arrays of tables: [[models]], [[webhooks]]


def _key_line(text: str, table: str | None, key: str, occurrence: int = 0) -> int | None:
    """The 1-based line where ``key`` is set in ``table`` (its ``occurrence``-th copy for
    arrays of tables), the table's header line when the key is not written there, or None."""
    key_re = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=") if key else None
    current: tuple[str, int] | None = None
    copies: dict[str, int] = {}
    header_line = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            name = stripped.split("#", 1)[0].strip().strip("[]").strip()
            copies[name] = copies.get(name, -1) + 1
            current = (name, copies[name])
            if table is not None and current == (table, occurrence):
                header_line = number
            continue
        here = current is None if table is None else current == (table, occurrence)
        if here and key_re is not None and key_re.match(line):
            return number
    return header_line


def _fail(path: Path, text: str, table: str | None, key: str, message: str, occurrence: int = 0) -> ConfigError:
    line = _key_line(text, table, key, occurrence)
    where = f"{path}:{line}" if line else str(path)
    if table in _ARRAYS:
        shown = f"{table}[{occurrence}].{key}"
    else:
        shown = f"[{table}].{key}" if table else key
    return ConfigError(f"{where}: {shown}: {message}")


def _validate_section(path: Path, text: str, name: str, model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise _fail(path, text, None, name, "must be a table")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else name
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise _fail(path, text, name, key, message) from None


def load_config_file(path: Path, settings: Settings) -> None:
    """Read a TOML config into ``settings`` (in place); raise ConfigError on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None

    for key in data:
        if key not in _TOP_LEVEL:
            raise _fail(path, text, None, key, f"unknown key (known: {', '.join(sorted(_TOP_LEVEL))})")
    if "public_url" in data:
        if not isinstance(data["public_url"], str):
            raise _fail(path, text, None, "public_url", "must be a string")
        settings.public_url = data["public_url"]
    if "database_url" in data:
        if not isinstance(data["database_url"], str):
            raise _fail(path, text, None, "database_url", "must be a string")
        settings.database_url = data["database_url"]
    if "batches" in data:
        settings.batches = _validate_section(path, text, "batches", BatchLimits, data["batches"])
    if "engine" in data:
        settings.engine = _validate_section(path, text, "engine", EngineSettings, data["engine"])
    if "limits" in data:
        settings.limits = _validate_section(path, text, "limits", ServerLimits, data["limits"])
    if "rate_limits" in data:
        settings.rate_limits = _validate_section(path, text, "rate_limits", RateLimits, data["rate_limits"])
    if "files" in data:
        settings.files = _validate_section(path, text, "files", FileLimits, data["files"])
    if "usage" in data:
        settings.usage = _validate_section(path, text, "usage", UsageSettings, data["usage"])
    if "webhook_delivery" in data:
        settings.webhook_delivery = _validate_section(
            path, text, "webhook_delivery", WebhookDelivery, data["webhook_delivery"]
        )
    if "webhooks" in data:
        tables = data["webhooks"]
        if not isinstance(tables, list):
            raise _fail(path, text, None, "webhooks", "must be an array of tables: write [[webhooks]]")
        settings.webhooks = [_parse_webhook(path, text, i, table) for i, table in enumerate(tables)]
        seen: dict[tuple[str, str | None], int] = {}
        for i, declared in enumerate(settings.webhooks):
            first = seen.setdefault((declared.url, declared.workspace), i)
            if first != i:
                raise _fail(
                    path, text, "webhooks", "url",
                    f"the same url and workspace as webhooks[{first}]: list both events in one", occurrence=i,
                )  # fmt: skip
    if "models" in data:
        tables = data["models"]
        if not isinstance(tables, list):
            raise _fail(path, text, None, "models", "must be an array of tables: write [[models]]")
        settings.routes = [_parse_route(path, text, i, table) for i, table in enumerate(tables)]


def _parse_webhook(path: Path, text: str, index: int, table: Any) -> WebhookEndpointConfig:
    def fail(key: str, message: str) -> ConfigError:
        return _fail(path, text, "webhooks", key, message, occurrence=index)

    if not isinstance(table, dict):
        raise fail("", "must be a table")
    try:
        declared = WebhookEndpointConfig.model_validate(table)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        raise fail(key, "unknown key" if err["type"] == "extra_forbidden" else err["msg"]) from None
    try:
        hooks.check_url(declared.url)
    except ApiError as exc:
        raise fail("url", exc.message.removeprefix("url: ")) from None
    try:
        hooks.secret_key(declared.secret)
    except ValueError as exc:
        raise fail("secret", str(exc)) from None
    for event in declared.events or []:
        if event not in hooks.BATCH_EVENTS:
            raise fail("events", f"unknown event {event!r} (known: {', '.join(hooks.BATCH_EVENTS)})")
    if declared.events is not None and not declared.events:
        raise fail("events", "lists no event: leave it out for every batch event")
    return declared


def _parse_route(path: Path, text: str, index: int, table: Any) -> Route:
    def fail(key: str, message: str) -> ConfigError:
        return _fail(path, text, "models", key, message, occurrence=index)

    if not isinstance(table, dict):
        raise fail("", "must be a table")
    for key in ("id", "backend"):
        if key not in table:
            raise fail(key, "required key is missing")
        if not isinstance(table[key], str) or not table[key]:
            raise fail(key, "must be a non-empty string")
    backend = table["backend"]
    if backend not in registry.BACKENDS:
        raise fail("backend", f"unknown backend {backend!r} (known: {', '.join(sorted(registry.BACKENDS))})")
    options = {k: v for k, v in table.items() if k not in ROUTE_KEYS}
    try:
        checked = registry.BACKENDS[backend].options_model.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "backend"
        if err["type"] == "extra_forbidden":
            known = sorted(ROUTE_KEYS | set(registry.BACKENDS[backend].options_model.model_fields))
            raise fail(key, f"unknown option for backend {backend!r} (known: {', '.join(known)})") from None
        raise fail(key, err["msg"]) from None
    for key, kind in (("display_name", str), ("created_at", str)):
        if key in table and not isinstance(table[key], kind):
            raise fail(key, "must be a string")
    for key in ("max_tokens", "max_input_tokens", "max_concurrency", "max_attempts"):
        if key in table and (not isinstance(table[key], int) or isinstance(table[key], bool) or table[key] < 1):
            raise fail(key, "must be a positive integer")
    listed = _listed_models(table, fail) if "models" in table else None
    prices: dict[str, float] = {}
    for key, field_name in PRICE_KEYS.items():
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise fail(key, "must be a number of US dollars per million tokens, 0 or more")
            prices[field_name] = float(value)
    route = Route(
        id=table["id"],
        backend=backend,
        options=checked.model_dump(),
        display_name=table.get("display_name"),
        created_at=table.get("created_at"),
        max_tokens=table.get("max_tokens"),
        max_input_tokens=table.get("max_input_tokens"),
        max_concurrency=table.get("max_concurrency"),
        max_attempts=table.get("max_attempts", 3),
        index=index,
        models=listed,
        prices=Prices(**prices) if prices else None,
    )
    for model in listed or ():
        if not route.matches(model.id):
            raise fail("models", f"{model.id!r} is not a name this route serves (its id is {route.id!r})")
    return route


def _listed_models(table: dict[str, Any], fail: Any) -> tuple[ListedModel, ...]:
    """``models = ["a", "b"]`` or ``models = [{id = "a", display_name = "A", ...}]``."""
    value = table["models"]
    if not isinstance(value, list):
        raise fail("models", "must be a list of model names or tables")
    listed = []
    for item in value:
        if isinstance(item, str) and item:
            listed.append(ListedModel(item))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise fail("models", "each entry must be a model name or a table with an id")
        unknown = set(item) - {"id", "display_name", "created_at", "max_tokens", "max_input_tokens"}
        if unknown:
            raise fail("models", f"unknown key {sorted(unknown)[0]!r} in a listed model")
        for key in ("max_tokens", "max_input_tokens"):
            if key in item and (not isinstance(item[key], int) or isinstance(item[key], bool) or item[key] < 1):
                raise fail("models", f"{key} of a listed model must be a positive integer")
        listed.append(
            ListedModel(
                item["id"],
                item.get("display_name"),
                item.get("created_at"),
                item.get("max_tokens"),
                item.get("max_input_tokens"),
            )
        )
    return tuple(listed)


def load_settings(
    *,
    host: str | None = None,
    port: int | None = None,
    database_url: str | None = None,
    config_path: str | Path | None = None,
    public_url: str | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build settings from flags (None when not given), the environment and the config file."""
    env = os.environ if environ is None else environ
    settings = Settings()
    path = config_path or env.get("BATCHYARD_CONFIG")
    if path:
        settings.config_path = Path(path)
        load_config_file(settings.config_path, settings)
    if env.get("BATCHYARD_DATABASE_URL"):
        settings.database_url = env["BATCHYARD_DATABASE_URL"]
    if env.get("BATCHYARD_PUBLIC_URL"):
        settings.public_url = env["BATCHYARD_PUBLIC_URL"]
    if database_url:
        settings.database_url = database_url
    if public_url:
        settings.public_url = public_url
    if host:
        settings.host = host
    if port is not None:
        settings.port = port
    if settings.public_url:
        settings.public_url = settings.public_url.rstrip("/")
    return settings
