"""The ``batchyard`` command."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import logconfig
from .config import ConfigError, Settings, load_settings
from .store.database import (
    Database,
    DatabaseUrlError,
    EngineRefused,
    SoleEngineLock,
    parse_database_url,
    sole_engine_lock,
)
from .store.keys import KeyStore

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _settings(**flags: object) -> Settings:
    try:
        return load_settings(**flags)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


async def _upgrade(settings: Settings) -> str:
    from .store import migrate

    db = Database(parse_database_url(settings.database_url))
    try:
        return await migrate.upgrade(db)
    finally:
        await db.close()


def _preflight_backends(settings: Settings) -> None:
    """Refuse to start on a route that cannot work (a missing model file, say), with a
    message naming it, before the server binds its port."""
    import logging

    from .backends.llamacpp import BUNDLED_MODEL_ID, INSTALL_HINT, BackendStartError
    from .backends.router import Router

    try:
        Router(settings.routes).preflight()
    except BackendStartError as exc:
        raise click.ClickException(str(exc)) from None
    if settings.config_path is None and not any(r.id == BUNDLED_MODEL_ID for r in settings.routes):
        logging.getLogger("batchyard").info(
            f"no local model: the simulator answers every model name. `{INSTALL_HINT}` adds SmolLM2 "
            f"as model {BUNDLED_MODEL_ID!r}, run in-process by llama.cpp."
        )


def _claim_sole_engine(settings: Settings) -> SoleEngineLock | None:
    """On a SQLite file, the one engine's lock, held for the life of this process; a second
    engine is refused here, before it binds a port or touches a lease."""
    lock = sole_engine_lock(parse_database_url(settings.database_url))
    if lock is None:
        return None
    try:
        return lock.acquire()
    except EngineRefused as exc:
        raise click.ClickException(str(exc)) from None


def _prepare_database(settings: Settings) -> None:
    """Create or migrate the schema before serving; refuse a schema from the future."""
    from .store.migrate import SchemaTooNew

    try:
        asyncio.run(_upgrade(settings))
    except (SchemaTooNew, DatabaseUrlError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot open the database {settings.database_url!r}: {exc}") from None


@click.group()
@click.version_option(package_name="batchyard")
def main() -> None:
    """batchyard: Anthropic's Message Batches API, self-hosted."""


@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default 8000).")
@click.option("--database", "database_url", default=None, help="sqlite:///PATH or postgresql://... [BATCHYARD_DATABASE_URL]")
@click.option("--config", "config_path", default=None, help="TOML config file. [BATCHYARD_CONFIG]")
@click.option("--public-url", default=None, help="Base URL clients reach this server at. [BATCHYARD_PUBLIC_URL]")
@click.option("--no-engine", is_flag=True, help="Serve the API only; `batchyard worker` processes run the batches.")
@click.option("--access-log", is_flag=True, help="Log every request (method, path, status, time, request id).")
@click.option("--require-keys", is_flag=True, help="Refuse calls without a valid API key even before any key exists.")
@click.option("--insecure-open", is_flag=True, help="Allow a non-loopback bind in open mode (no API keys). Don't.")
@click.option(
    "--workers",
    default="1",
    show_default=True,
    help="API processes on the port: a number, or 'auto' (one per core). SQLite: one of them runs the engine.",
)
@click.option("--log-level", default="INFO", show_default=True)
def serve(
    host: str | None,
    port: int | None,
    database_url: str | None,
    config_path: str | None,
    public_url: str | None,
    no_engine: bool,
    access_log: bool,
    require_keys: bool,
    insecure_open: bool,
    workers: str,
    log_level: str,
) -> None:
    """Run the API server (with an engine unless --no-engine)."""
    from .api.app import create_app

    logconfig.configure(log_level.upper())
    settings = _settings(
        host=host, port=port, database_url=database_url, config_path=config_path, public_url=public_url
    )
    settings.require_keys = require_keys
    _preflight_backends(settings)
    _prepare_database(settings)
    if not _is_loopback(settings.host) and not require_keys and not insecure_open:
        if asyncio.run(_key_count(settings)) == 0:
            raise click.ClickException(
                f"refusing to listen on {settings.host} in open mode: no API key exists, so anyone who can reach "
                "this address could use the server. Create a key (batchyard keys create --workspace NAME), "
                "pass --require-keys, or bind 127.0.0.1; --insecure-open overrides this."
            )
    count = _worker_count(workers)
    from .api.server import serve as run_server

    if count > 1:
        sys.exit(_serve_workers(settings, count, run_engine=not no_engine, access_log=access_log))
    engine_lock = None if no_engine else _claim_sole_engine(settings)
    app = create_app(settings, run_engine=not no_engine, access_log=access_log, engine_lock=engine_lock)
    started = run_server(
        app,
        host=settings.host,
        port=settings.port,
        header_timeout=settings.limits.header_timeout,
        shutdown_grace=settings.engine.shutdown_grace,
    )
    if not started:
        sys.exit(1)


def _worker_count(value: str) -> int:
    import os

    if value == "auto":
        return max(1, os.cpu_count() or 1)
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter("a positive number or 'auto'", param_hint="--workers")
    return int(value)


def _serve_workers(settings: Settings, count: int, *, run_engine: bool, access_log: bool) -> int:
    """N API processes on one port under a supervisor (see api/workers.py)."""
    import dataclasses
    import logging

    from .api.app import create_app
    from .api.server import serve as run_server
    from .api.workers import Supervisor, bind

    url = parse_database_url(settings.database_url)
    try:
        listener = bind(settings.host, settings.port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None

    def run_worker(slot: int, sock: socket.socket, relay_fd: int) -> int:
        class Tagged(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                record.worker = slot
                return True

        for handler in logging.getLogger().handlers:
            handler.addFilter(Tagged())
        sqlite = url.dialect == "sqlite"
        mine = dataclasses.replace(settings, shared_rate_limits=sqlite, notice_relay_fd=relay_fd if sqlite else None)
        engine_here, lock = run_engine, None
        if run_engine and sqlite:
            lock = sole_engine_lock(url)
            try:
                if lock is not None:
                    lock.acquire()
            except EngineRefused:
                engine_here, lock = False, None  # another worker runs this file's engine
        app = create_app(mine, run_engine=engine_here, access_log=access_log, engine_lock=lock)
        started = run_server(
            app,
            host=settings.host,
            port=settings.port,
            header_timeout=settings.limits.header_timeout,
            shutdown_grace=settings.engine.shutdown_grace,
            sockets=[sock],
        )
        return 0 if started else 1

    return Supervisor(count, listener, run_worker).run()


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--database", "database_url", default=None, help="sqlite:///PATH or postgresql://... [BATCHYARD_DATABASE_URL]")
@click.option("--config", "config_path", default=None, help="TOML config file. [BATCHYARD_CONFIG]")
def db_upgrade(database_url: str | None, config_path: str | None) -> None:
    """Create the schema or migrate it to the newest revision."""
    settings = _settings(database_url=database_url, config_path=config_path)
    _prepare_database(settings)
    click.echo(f"database schema is up to date ({parse_database_url(settings.database_url).redacted()})")


@main.command()
@click.option("--database", "database_url", default=None, help="sqlite:///PATH or postgresql://... [BATCHYARD_DATABASE_URL]")
@click.option("--config", "config_path", default=None, help="TOML config file. [BATCHYARD_CONFIG]")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Requests in flight (default from config, 256).")
@click.option("--log-level", default="INFO", show_default=True)
def worker(database_url: str | None, config_path: str | None, concurrency: int | None, log_level: str) -> None:
    """Run an engine only: claim batch requests from the shared database and process them.

    Any number of workers (and `serve --no-engine` API processes) can share one PostgreSQL."""
    logconfig.configure(log_level.upper())
    settings = _settings(database_url=database_url, config_path=config_path)
    if concurrency is not None:
        settings.engine.concurrency = concurrency
    _preflight_backends(settings)
    _prepare_database(settings)
    _run(_worker_main(settings, _claim_sole_engine(settings)))


def _run(main_coro: object) -> None:
    try:
        import uvloop

        uvloop.run(main_coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(main_coro)  # type: ignore[arg-type]


async def _worker_main(settings: Settings, engine_lock: SoleEngineLock | None) -> None:
    from .services import open_services

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    svc = await open_services(settings, run_engine=True, engine_lock=engine_lock)
    try:
        await stop.wait()
    finally:
        await svc.close()


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _with_keys(settings: Settings, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    db = Database(parse_database_url(settings.database_url))
    try:
        return await work(KeyStore(db))
    finally:
        await db.close()


async def _key_count(settings: Settings) -> int:
    return await _with_keys(settings, lambda store: store.count())


@main.group()
def keys() -> None:
    """API keys and workspaces. Once a key exists, every API call needs a valid one."""


_database_option = click.option(
    "--database", "database_url", default=None, help="sqlite:///PATH or postgresql://... [BATCHYARD_DATABASE_URL]"
)


@keys.command("create")
@click.option("--workspace", default=None, help="Workspace name; created on first use.")
@click.option("--admin", is_flag=True, help="An Admin API key (sk-by-admin-...): /v1/organizations/* only, no workspace.")
@click.option("--name", default=None, help="A label for the key.")
@_database_option
def keys_create(workspace: str | None, admin: bool, name: str | None, database_url: str | None) -> None:
    """Create a key and print it. It is shown this once: only its hash is stored."""
    from .keys import create_key

    if admin == (workspace is not None):
        raise click.UsageError("give --workspace NAME for an API key, or --admin for an Admin API key")
    settings = _settings(database_url=database_url)
    _prepare_database(settings)
    key_id, workspace_id, secret = asyncio.run(
        _with_keys(settings, lambda s: create_key(s, workspace, name, admin=admin))
    )
    click.echo(secret)
    whose = "the Admin API" if admin else f"workspace {workspace!r} ({workspace_id})"
    click.echo(f"key {key_id} for {whose}; store it now, it is not shown again", err=True)


@keys.command("list")
@_database_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
def keys_list(database_url: str | None, as_json: bool) -> None:
    """Keys with their prefix, workspace, name, creation, last use and status."""
    import orjson

    from .protocol.timestamps import to_rfc3339

    settings = _settings(database_url=database_url)
    _prepare_database(settings)
    records = asyncio.run(_with_keys(settings, lambda s: s.list_keys()))
    rows = [
        {
            "id": r.id,
            "prefix": r.prefix + "...",
            "workspace": "(admin)" if r.admin else r.workspace_name,
            "workspace_id": r.workspace_id,
            "name": r.name,
            "created_at": to_rfc3339(r.created_at),
            "last_used_at": to_rfc3339(r.last_used_at),
            "status": "disabled" if r.status == "inactive" else r.status,
        }
        for r in records
    ]
    if as_json:
        for row in rows:
            click.echo(orjson.dumps(row).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "prefix", "workspace", "name", "created", "last used", "status")
    for row in rows:
        table.add_row(
            row["id"], row["prefix"], row["workspace"], row["name"] or "", row["created_at"] or "",
            row["last_used_at"] or "never", row["status"],
        )
    Console().print(table)


@keys.command("disable")
@click.argument("key_id")
@_database_option
def keys_disable(key_id: str, database_url: str | None) -> None:
    """Disable a key (within a few seconds on every server)."""
    from .protocol.timestamps import now_us

    settings = _settings(database_url=database_url)
    _prepare_database(settings)
    found = asyncio.run(_with_keys(settings, lambda s: s.disable(key_id, now_us())))
    if not found:
        raise click.ClickException(f"no key {key_id!r}")
    click.echo(f"key {key_id} disabled")


@main.group()
def webhooks() -> None:
    """Webhook endpoints: those made through the Admin API and those in the config file."""


@webhooks.command("list")
@_database_option
@click.option("--config", "config_path", default=None, type=click.Path(path_type=Path), help="TOML config file [BATCHYARD_CONFIG]")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per endpoint.")
def webhooks_list(database_url: str | None, config_path: Path | None, as_json: bool) -> None:
    """Endpoints with their source, state, events, workspace and deliveries: those in the
    database (made through the Admin API, or declared in the config file of a server that
    started), and those of --config that no server has started with yet (state
    ``declared``). Nothing is written."""
    import orjson

    settings = _settings(database_url=database_url, config_path=config_path)
    _prepare_database(settings)
    rows = asyncio.run(_webhook_rows(settings))
    if as_json:
        for row in rows:
            click.echo(orjson.dumps(row).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "source", "state", "url", "events", "workspace", "delivered", "pending", "failed")
    for row in rows:
        table.add_row(
            row["id"], row["source"], row["state"], row["url"], ", ".join(row["enabled_events"]),
            row["workspace_id"] or "(all)", *(str(row["deliveries"][k]) for k in ("delivered", "pending", "failed")),
        )
    Console().print(table)


async def _webhook_rows(settings: Settings) -> list[dict[str, Any]]:
    from .protocol import webhooks as wire
    from .store.webhooks import WebhookStore
    from .webhooks import config_endpoint_id

    none = {"delivered": 0, "pending": 0, "failed": 0}
    db = Database(parse_database_url(settings.database_url))
    try:
        store = WebhookStore(db)
        per_endpoint = await store.delivery_counts_by_endpoint()
        rows: list[dict[str, Any]] = []
        for record in await store.endpoints():
            shown = wire.endpoint(record)
            shown["deliveries"] = per_endpoint.get(record.id, none)
            rows.append(shown)
        known = {row["id"] for row in rows}
        for declared in settings.webhooks:
            if config_endpoint_id(declared) not in known:
                rows.append({
                    "id": config_endpoint_id(declared), "source": "config", "state": "declared", "url": declared.url,
                    "enabled_events": declared.events or list(wire.BATCH_EVENTS), "workspace_id": declared.workspace,
                    "name": declared.name, "deliveries": none,
                })  # fmt: skip
        return rows
    finally:
        await db.close()


# -- the client: batches on any server ---------------------------------------------------


class _Api:
    """What every `batchyard batch` command needs: a client, and how to print."""

    def __init__(self, base_url: str, api_key: str | None, as_json: bool) -> None:
        from .client import BatchClient, OpenAIBatchClient

        self.client = BatchClient(base_url, api_key)
        self.openai = OpenAIBatchClient(base_url, api_key)
        self.as_json = as_json

    def for_id(self, batch_id: str) -> Any:
        """The client of the API a batch id belongs to (``batch_…``: OpenAI's Batch API)."""
        return self.openai if batch_id.startswith("batch_") else self.client

    def emit(self, data: object) -> None:
        import orjson

        click.echo(orjson.dumps(data).decode())

    def show(self, batch: dict[str, object]) -> None:
        """A batch as JSON with --json, else as a few readable lines."""
        self.emit(batch) if self.as_json else click.echo(_describe(batch))


def _client_options(command: F) -> F:
    command = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(command)
    command = click.option(
        "--api-key", envvar="ANTHROPIC_API_KEY", default=None, help="API key. [ANTHROPIC_API_KEY]"
    )(command)
    command = click.option(
        "--base-url",
        envvar="ANTHROPIC_BASE_URL",
        default="http://127.0.0.1:8000",
        show_default=True,
        help="Server to talk to (ours or Anthropic's). [ANTHROPIC_BASE_URL]",
    )(command)
    return command


class _ApiFailure(click.ClickException):
    exit_code = 1


def _run_client(work: object) -> None:
    from .client import ClientError

    try:
        work()  # type: ignore[operator]
    except ClientError as exc:
        raise _ApiFailure(str(exc)) from None


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "0 requests"


def _describe(batch: dict[str, object]) -> str:
    if batch.get("object") == "batch":
        return _describe_openai(batch)
    counts = batch["request_counts"]
    assert isinstance(counts, dict)
    lines = [
        f"{batch['id']}  {str(batch['processing_status']).replace('_', ' ')}",
        f"  requests:  {_counts_text(counts)}",
        f"  created:   {batch['created_at']}",
        f"  expires:   {batch['expires_at']}",
    ]
    for key in ("ended_at", "cancel_initiated_at", "archived_at", "results_url"):
        if batch.get(key):
            lines.append(f"  {key.replace('_', ' ')}: {batch[key]}")
    return "\n".join(lines)


def _when(seconds: object) -> str:
    import datetime

    assert isinstance(seconds, int)
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()


def _describe_openai(batch: dict[str, object]) -> str:
    counts = batch["request_counts"]
    assert isinstance(counts, dict)
    lines = [
        f"{batch['id']}  {batch['status']}  ({batch['endpoint']})",
        f"  requests:  {counts['total']} in all, {counts['completed']} completed, {counts['failed']} failed",
        f"  created:   {_when(batch['created_at'])}",
    ]
    for key in ("completed_at", "failed_at", "expired_at", "cancelled_at"):
        if batch.get(key):
            lines.append(f"  {key.replace('_at', '')}: {_when(batch[key])}")
    for key in ("input_file_id", "output_file_id", "error_file_id"):
        if batch.get(key):
            lines.append(f"  {key.replace('_id', '').replace('_', ' ')}: {batch[key]}")
    errors = batch.get("errors")
    if isinstance(errors, dict):
        for error in errors.get("data") or []:
            lines.append(f"  error: line {error.get('line')}: {error.get('message')}")
    return "\n".join(lines)


def _progress_bar(api: _Api) -> Any:
    """A progress bar on a terminal (none with --json or when stderr is not one)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    show = not api.as_json and sys.stderr.isatty()
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not show, transient=False,
    )


def _watch(api: _Api, batch_id: str, poll: float) -> dict[str, object]:
    """Poll until the batch ends, with a progress bar on a terminal."""
    import time

    if batch_id.startswith("batch_"):
        return _watch_openai(api, batch_id, poll)
    batch = api.client.get(batch_id)
    total = sum(batch["request_counts"].values())
    progress = _progress_bar(api)
    with progress:
        task = progress.add_task(batch_id, total=total)
        while True:
            live = api.client.progress(batch_id)
            done = total - batch["request_counts"]["processing"]
            if live is not None:
                done = sum(live.get(k, 0) for k in ("succeeded", "errored", "canceled", "expired"))
            status = str(batch["processing_status"]).replace("_", " ")
            progress.update(task, completed=done, description=f"{batch_id} {status}")
            if batch["processing_status"] == "ended":
                return batch
            time.sleep(poll)
            batch = api.client.get(batch_id)


def _watch_openai(api: _Api, batch_id: str, poll: float) -> dict[str, object]:
    """An OpenAI batch until it ends: its counts move while it runs."""
    import time

    from .client import OPENAI_ENDED

    progress = _progress_bar(api)
    with progress:
        task = progress.add_task(batch_id, total=None)
        while True:
            batch = api.openai.get(batch_id)
            counts = batch["request_counts"]
            progress.update(
                task, total=counts["total"], completed=counts["completed"] + counts["failed"],
                description=f"{batch_id} {batch['status']}",
            )
            if batch["status"] in OPENAI_ENDED:
                return batch
            time.sleep(poll)


@main.group()
def batch() -> None:
    """Drive batches on any Message Batches server (this one, or Anthropic's), or on any
    OpenAI Batch API server (this one too): ``batch_…`` ids are OpenAI batches.

    Exit codes: 0 ok, 1 the server said no (its message is printed), 2 a usage error
    (bad arguments, or a batch file with bad lines)."""


@batch.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Wait until the batch ends, with a progress bar.")
@click.option("--poll", type=float, default=1.0, show_default=True, help="Seconds between polls with --wait.")
@click.option(
    "--api", "api_name", type=click.Choice(["auto", "anthropic", "openai"]), default="auto", show_default=True,
    help="The file's format: Message Batches lines, or OpenAI Batch API lines (auto: from its first line).",
)
@_client_options
def batch_submit(
    file: Path, wait: bool, poll: float, api_name: str, base_url: str, api_key: str | None, as_json: bool
) -> None:
    """Submit FILE.jsonl: one {"custom_id": ..., "params": {...}} per line (Message Batches),
    or one {"custom_id", "method": "POST", "url", "body"} per line (OpenAI's Batch API: the
    file is uploaded, then the batch made from it). Lines are checked here first; bad ones
    are listed with their line numbers and nothing is sent."""
    from .client import check_jsonl, check_openai_jsonl, file_format

    endpoint = None
    if api_name == "auto":
        api_name = file_format(file)
    if api_name == "openai":
        count, endpoint, bad = check_openai_jsonl(file)
    else:
        count, bad = check_jsonl(file)
    if bad:
        for line in bad[:50]:
            where = f"{file}:{line.number}" if line.number else str(file)
            click.echo(f"{where}: {line.message}", err=True)
        if len(bad) > 50:
            click.echo(f"... and {len(bad) - 50} more bad lines", err=True)
        raise click.exceptions.Exit(2)
    api = _Api(base_url, api_key, as_json)

    def work() -> None:
        created = api.openai.create(file, endpoint) if endpoint is not None else api.client.create(file)
        if not as_json:
            click.echo(f"submitted {created['id']} ({count} requests)")
        if wait:
            api.show(_watch(api, created["id"], poll))
        elif as_json:
            api.emit(created)

    _run_client(work)


@batch.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--after-id", default=None, help="Page after (older than) this batch.")
@click.option("--before-id", default=None, help="Page before (newer than) this batch.")
@click.option("--api", "api_name", type=click.Choice(["anthropic", "openai"]), default="anthropic", show_default=True,
              help="Which Batch API's batches.")
@_client_options
def batch_list(
    limit: int, after_id: str | None, before_id: str | None, api_name: str, base_url: str, api_key: str | None,
    as_json: bool,
) -> None:
    """Batches, newest first."""
    api = _Api(base_url, api_key, as_json)

    def work() -> None:
        if api_name == "openai":
            if before_id:
                raise click.UsageError("OpenAI's Batch API pages forward only: use --after-id")
            page = api.openai.list(min(limit, 100), after_id)
            if as_json:
                api.emit(page)
                return
            for item in page["data"]:
                counts = item["request_counts"]
                click.echo(f"{item['id']}  {_when(item['created_at'])}  {item['status']:<10}  "
                           f"{counts['completed']} completed, {counts['failed']} failed of {counts['total']}")
            if not page["data"]:
                click.echo("no batches")
            elif page["has_more"]:
                click.echo(f"more: --after-id {page['last_id']}")
            return
        page = api.client.list(limit, after_id, before_id)
        if as_json:
            api.emit(page)
            return
        if not page["data"]:
            click.echo("no batches")
            return
        for item in page["data"]:
            status = str(item["processing_status"]).replace("_", " ")
            click.echo(f"{item['id']}  {item['created_at']}  {status:<11}  {_counts_text(item['request_counts'])}")
        if page["has_more"]:
            click.echo(f"more: --after-id {page['last_id']}")

    _run_client(work)


@batch.command("get")
@click.argument("batch_id")
@_client_options
def batch_get(batch_id: str, base_url: str, api_key: str | None, as_json: bool) -> None:
    """One batch."""
    api = _Api(base_url, api_key, as_json)
    _run_client(lambda: api.show(api.for_id(batch_id).get(batch_id)))


@batch.command("watch")
@click.argument("batch_id")
@click.option("--poll", type=float, default=1.0, show_default=True, help="Seconds between polls.")
@_client_options
def batch_watch(batch_id: str, poll: float, base_url: str, api_key: str | None, as_json: bool) -> None:
    """Follow a batch until it ends."""
    api = _Api(base_url, api_key, as_json)

    _run_client(lambda: api.show(_watch(api, batch_id, poll)))


@batch.command("results")
@click.argument("batch_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSONL here (streamed to disk) instead of standard output.")
@_client_options
def batch_results(batch_id: str, output: Path | None, base_url: str, api_key: str | None, as_json: bool) -> None:
    """The results of an ended batch, as JSON Lines."""
    from .client import ClientError

    api = _Api(base_url, api_key, as_json)

    def work() -> None:
        from .client import OPENAI_ENDED

        client = api.for_id(batch_id)
        current = client.get(batch_id)
        status = current.get("processing_status", current.get("status"))
        if status not in ("ended", *OPENAI_ENDED):
            raise ClientError(f"batch {batch_id} has not ended yet ({status})")
        if output is None:
            out = sys.stdout.buffer
            for chunk in client.results(current):
                out.write(chunk)
            out.flush()
            return
        lines = 0
        partial = output.with_name(output.name + ".part")
        with partial.open("wb") as handle:
            for chunk in client.results(current):
                handle.write(chunk)
                lines += chunk.count(b"\n")
        partial.replace(output)
        if as_json:
            api.emit({"id": batch_id, "file": str(output), "lines": lines})
        else:
            click.echo(f"{lines} results written to {output}")

    _run_client(work)


@batch.command("cancel")
@click.argument("batch_id")
@_client_options
def batch_cancel(batch_id: str, base_url: str, api_key: str | None, as_json: bool) -> None:
    """Cancel a batch: requests not yet started end as canceled."""
    api = _Api(base_url, api_key, as_json)
    _run_client(lambda: api.show(api.for_id(batch_id).cancel(batch_id)))


@batch.command("delete")
@click.argument("batch_id")
@_client_options
def batch_delete(batch_id: str, base_url: str, api_key: str | None, as_json: bool) -> None:
    """Delete an ended batch and its results."""
    if batch_id.startswith("batch_"):
        raise click.UsageError("OpenAI's Batch API has no delete: an OpenAI batch stays listed; its files can be deleted")
    api = _Api(base_url, api_key, as_json)

    def work() -> None:
        deleted = api.client.delete(batch_id)
        api.emit(deleted) if as_json else click.echo(f"deleted {deleted['id']}")

    _run_client(work)
