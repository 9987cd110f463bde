"""Wiring: the objects one process runs on, whatever its role (API, engine, or both)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .backends.router import Router
from .batches import Batches
from .config import Settings
from .engine.dispatcher import Engine, make_limiters
from .engine.limits import RouteLimiter
from .engine.upkeep import guarded
from .files import Files, sweep_forever
from .keys import KeyRing, flush_usage_forever, forget_disabled_keys
from .messages import Messages
from .metrics import Metrics
from .store import migrate
from .store.batches import BatchStore
from .store.database import Database, SoleEngineLock, parse_database_url
from .store.files import DatabaseBlobs, FileStore
from .store.keys import KeyStore
from .store.notify import Notifier, PostgresNotifier, RelayNotifier
from .usage import UsageRecorder
from .usage import flush_forever as flush_usage_of
from .webhooks import WebhookSender, declare_config_endpoints


@dataclass
class Services:
    settings: Settings
    db: Database
    batches: Batches
    messages: Messages
    router: Router
    notifier: Notifier
    limiters: dict[int, RouteLimiter]
    metrics: Metrics
    keys: KeyRing
    files: Files
    engine: Engine | None = None
    engine_lock: SoleEngineLock | None = None
    webhooks: WebhookSender | None = None  # with the engine: delivers webhook events
    background: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.engine is not None:
            await self.engine.stop()
        if self.webhooks is not None:
            await self.webhooks.close()
        with contextlib.suppress(Exception):
            await self.keys.flush_usage()
        if self.messages.usage is not None:
            with contextlib.suppress(Exception):
                await self.messages.usage.flush()
        await self.router.close()
        await self.notifier.close()
        await self.db.close()
        if self.engine_lock is not None:
            self.engine_lock.release()


async def open_services(
    settings: Settings,
    *,
    run_engine: bool,
    metrics: Metrics | None = None,
    engine_lock: SoleEngineLock | None = None,
) -> Services:
    """Open the database (migrating it), start the backends, the notices and, if asked,
    the engine. On a SQLite file the engine needs the file's sole-engine lock: pass it
    when the caller already holds it, else it is taken here (``EngineRefused`` when
    another engine has it). If anything fails, what was opened is closed again."""
    url = parse_database_url(settings.database_url)
    db = Database(url)
    opened: list[Callable[[], Awaitable[None]]] = [db.close]
    lock = engine_lock
    try:
        if run_engine and lock is None:
            lock = db.sole_engine_lock()
            if lock is not None:
                lock.acquire()
        await migrate.upgrade(db)
        router = Router(settings.routes)
        await router.start()
        opened.append(router.close)
        notifier: Notifier
        if db.is_postgres:
            notifier = PostgresNotifier(url.libpq_url)
        elif settings.notice_relay_fd is not None:
            notifier = RelayNotifier(settings.notice_relay_fd)
        else:
            notifier = Notifier()
        await notifier.start()
        opened.append(notifier.close)
        files = Files(FileStore(db), DatabaseBlobs(db), settings)
        batch_store = BatchStore(db)
        batches = Batches(batch_store, settings, notifier, files)
        metrics = metrics or Metrics()
        usage = UsageRecorder(batch_store.usage, metrics, router.metric_model)
        limiters = make_limiters(router)
        services = Services(
            settings=settings,
            db=db,
            batches=batches,
            messages=Messages(
                router, limiters, metrics, ping_interval=settings.limits.stream_ping_interval, usage=usage
            ),
            router=router,
            notifier=notifier,
            limiters=limiters,
            metrics=metrics,
            keys=KeyRing(KeyStore(db), require_keys=settings.require_keys),
            files=files,
            engine_lock=lock,
        )
        await declare_config_endpoints(batch_store.webhooks, services.keys.store, settings.webhooks)
        if run_engine:
            engine = Engine(
                batches, router, settings.engine, notifier, metrics, limiters=limiters, files=services.files
            )
            await engine.start(sole_engine=lock is not None)
            services.engine = engine
            if lock is not None:
                await batch_store.webhooks.release_leases()  # the only engine: any lease is a dead run's
            services.webhooks = WebhookSender(batch_store.webhooks, settings.webhook_delivery, metrics, notifier)
    except BaseException:
        for close in reversed(opened):
            with contextlib.suppress(Exception):
                await close()
        if lock is not None and engine_lock is None:
            lock.release()
        raise
    services.background.append(asyncio.create_task(flush_usage_forever(services.keys), name="key-usage"))
    services.background.append(
        asyncio.create_task(forget_disabled_keys(services.keys, notifier.subscribe()), name="key-notices")
    )
    services.background.append(asyncio.create_task(sweep_forever(services.files, db), name="files-sweep"))
    if services.messages.usage is not None:
        services.background.append(asyncio.create_task(flush_usage_of(services.messages.usage), name="usage"))
    if services.webhooks is not None:
        sender = services.webhooks
        services.background.append(
            asyncio.create_task(guarded("webhooks", sender.run, lambda: False), name="webhooks")
        )
    # What exists now (modules, models, routes, connections) lives as long as the process.
    # Frozen, the collector's full passes stop walking it: they took ~100 ms on a busy
    # engine, a stall of the event loop each time; with it frozen, under 10 ms.
    gc.freeze()
    return services
