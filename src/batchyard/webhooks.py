"""Webhook delivery: events from the outbox (``store/webhooks.py``) to the endpoints that
subscribed to them, at least once.

Every engine process runs one :class:`WebhookSender`. It claims due deliveries (a lease per
attempt, so an engine killed mid-delivery leaves the attempt to be claimed again once the
lease runs out), sends each in its own task with a timeout, and writes the attempt and what
follows: delivered on a 2xx, otherwise due again after an exponential backoff with jitter
(the first retry within seconds), until the event is ``max_age`` old. Every attempt of one
event carries the same ``webhook-id``, so a receiver can drop the duplicates that
at-least-once delivery allows. Attempts in flight are capped per endpoint, so a receiver
that is slow or never answers holds at most that many of this engine's slots and never
delays deliveries to the others.

Targets are checked on the address the name resolves to, and the connection goes to that
very address (the URL's name travels in ``Host`` and TLS SNI): a DNS name cannot smuggle in
a loopback, private or link-local address between the check and the connection, unless
``allow_private_networks`` is set."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from . import __version__
from .config import WebhookDelivery, WebhookEndpointConfig
from .metrics import Metrics
from .protocol import webhooks as wire
from .protocol.timestamps import now_us, seconds_to_us
from .store.keys import KeyStore
from .store.notify import Notice, Notifier
from .store.schema import DeliveryState
from .store.webhooks import DueDelivery, EndpointRecord, WebhookStore

log = logging.getLogger("batchyard.webhooks")

LEASE_SLACK = 5.0  # seconds a claimed attempt is held past its timeout
CLOSE_GRACE = 5.0  # seconds attempts in flight may finish when the process stops
KEEP_FINISHED = 7 * 86400  # seconds finished deliveries stay visible
CLEANUP_EVERY = 3600.0
MAX_ERROR = 500


class Refused(Exception):
    """The target is not one this server may call."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str  # with the checked address in place of the name
    host: str  # the Host header
    sni: str | None  # the TLS server name (https)


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the low 32 bits are an IPv4 address
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # local-use translation: could reach anything


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An address on the public internet. IPv6 forms that carry an IPv4 address (mapped,
    6to4, NAT64) are judged by that address: on a host with NAT64 or a 6to4 relay they reach
    it; Teredo and local-use NAT64 are refused outright."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None or address in LOCAL_NAT64:
            return False
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
        if embedded is not None:
            return _public(embedded)
    return address.is_global and not address.is_multicast


async def resolve(url: str, *, allow_private: bool) -> Target:
    """Where to connect for ``url``: its name resolved once, every address it gave checked
    (one private answer is enough to refuse: which one a client would use is not ours to
    guess), and the first one used."""
    parts = urlsplit(url)
    try:
        host = (parts.hostname or "").encode("idna").decode("ascii")  # an international name in its DNS form
    except UnicodeError:
        raise Refused(f"{parts.hostname!r} is not a valid host name") from None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise Refused(f"cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
    if not addresses:
        raise Refused(f"{host!r} resolves to no address")
    if not allow_private:
        for address in addresses:
            if not _public(address):
                raise Refused(
                    f"{host} is {address}, a loopback, private or link-local address: refused "
                    "(set [webhook_delivery] allow_private_networks = true to allow it)"
                )
    chosen = addresses[0]
    shown = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{shown}:{port}"
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    if ":" in host:  # an IPv6 literal
        host_header = f"[{host}]" if parts.port is None else f"[{host}]:{parts.port}"
    return Target(
        urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
        host_header,
        host if parts.scheme == "https" else None,
    )


def retry_delay(attempt: int, settings: WebhookDelivery, rng: random.Random) -> float:
    """Seconds before the attempt after ``attempt`` (1-based): base, 2×base, 4×base, …
    capped, each scaled by a random factor in [0.5, 1) so that receivers that failed
    together are not all called again at one instant."""
    return min(settings.retry_cap, settings.retry_base * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)


class WebhookSender:
    """Looks for due deliveries when a batch ends (a notice), when a retry it scheduled
    comes due, when an attempt finishes, and otherwise every ``poll_interval`` seconds (for
    events written by other processes, and retries scheduled by other engines): an idle
    database hears from it once per ``poll_interval``."""

    def __init__(
        self, store: WebhookStore, settings: WebhookDelivery, metrics: Metrics, notifier: Notifier | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.notifier = notifier
        self._rng = random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}  # endpoint -> attempts in flight here
        self._wake = asyncio.Event()
        self._wake_at: int | None = None  # microseconds: the earliest retry this sender scheduled
        self._last_cleanup = 0.0
        # One client per host name: connections go to an address, and httpx pools them by
        # address, so hosts sharing one (a CDN) must not share a TLS connection checked for
        # another's certificate.
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, host: str) -> httpx.AsyncClient:
        client = self._clients.get(host)
        if client is None:
            client = self._clients[host] = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout + 1),  # the attempt's own timeout comes first
                follow_redirects=False,
                trust_env=False,
                headers={"user-agent": f"batchyard-webhooks/{__version__}"},
                limits=httpx.Limits(max_connections=self.settings.per_endpoint * 2, max_keepalive_connections=self.settings.per_endpoint),
            )
        return client

    async def run(self) -> None:
        notices = self.notifier.subscribe() if self.notifier is not None else None
        listener = asyncio.create_task(self._listen(notices)) if notices is not None else None
        try:
            while True:
                self._wake.clear()
                await self.round()
                wait = self.settings.poll_interval
                if self._wake_at is not None:
                    wait = min(wait, max(0.0, (self._wake_at - now_us()) / 1_000_000))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            if listener is not None:
                listener.cancel()
            if notices is not None and self.notifier is not None:
                self.notifier.unsubscribe(notices)

    async def _listen(self, notices: asyncio.Queue[Notice]) -> None:
        while True:
            if (await notices.get()).kind == "ended":
                self._wake.set()

    async def round(self) -> int:
        """Claim what is due and room allows, and start it; returns the attempts started."""
        if time.monotonic() - self._last_cleanup > CLEANUP_EVERY:
            self._last_cleanup = time.monotonic()
            await self.store.forget_before(now_us() - seconds_to_us(KEEP_FINISHED))
        room = self.settings.concurrency - len(self._tasks)
        if room <= 0:
            return 0
        now = now_us()
        if self._wake_at is not None and self._wake_at <= now:
            self._wake_at = None
        picked: list[tuple[str, str, int]] = []
        endpoints = await self.store.endpoints_with_due(now)
        self._rng.shuffle(endpoints)  # no endpoint always first in line for the slots
        for endpoint_id in endpoints:
            free = min(self.settings.per_endpoint - self._in_flight.get(endpoint_id, 0), room - len(picked))
            if free > 0:
                picked += await self.store.due(endpoint_id, now, free)
        claimed = await self.store.claim(picked, now, seconds_to_us(self.settings.timeout + LEASE_SLACK))
        for delivery in claimed:
            self._in_flight[delivery.endpoint_id] = self._in_flight.get(delivery.endpoint_id, 0) + 1
            task = asyncio.create_task(self._attempt(delivery), name=f"webhook-{delivery.event_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    async def _attempt(self, delivery: DueDelivery) -> None:
        try:
            await self._try(delivery)
        except Exception:
            # Not written (the database, most likely): the lease runs out and it is tried again.
            log.exception("a webhook attempt could not be recorded", extra={"event_id": delivery.event_id})
        finally:
            left = self._in_flight.get(delivery.endpoint_id, 1) - 1
            if left:
                self._in_flight[delivery.endpoint_id] = left
            else:
                self._in_flight.pop(delivery.endpoint_id, None)
            self._wake.set()  # room for another

    async def _try(self, delivery: DueDelivery) -> None:
        started = now_us()
        clock = time.perf_counter()
        status: int | None = None
        error: str | None = None
        kind = "error"
        try:
            async with asyncio.timeout(self.settings.timeout):
                target = await resolve(delivery.url, allow_private=self.settings.allow_private_networks)
                headers = wire.sign(delivery.secret, delivery.event_id, started // 1_000_000, delivery.payload)
                headers["host"] = target.host
                extensions = {"sni_hostname": target.sni} if target.sni else {}
                async with self._client(target.host).stream(
                    "POST", target.url, content=delivery.payload, headers=headers, extensions=extensions
                ) as answer:
                    status = answer.status_code
            kind = "delivered" if 200 <= status < 300 else "http_error"
            if kind != "delivered":
                error = f"answered {status}"
        except Refused as exc:
            kind, error = "refused", str(exc)
        except TimeoutError:
            error = f"no answer within {self.settings.timeout:g} s"
        except Exception as exc:  # any failure of the call is this attempt's outcome, never an unrecorded one
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration = time.perf_counter() - clock
        at = now_us()
        deadline = delivery.event_created_at + seconds_to_us(self.settings.max_age)
        if kind == "delivered":
            outcome, next_at = DeliveryState.DELIVERED, None
        elif at >= deadline:
            outcome, next_at = DeliveryState.FAILED, None
        else:
            delay = seconds_to_us(retry_delay(delivery.attempt, self.settings, self._rng))
            outcome, next_at = DeliveryState.PENDING, min(at + delay, deadline)
            self._wake_at = next_at if self._wake_at is None else min(self._wake_at, next_at)
        self.metrics.webhook_attempts.inc(outcome=kind)
        self.metrics.webhook_latency.observe(duration)
        written = await self.store.record_attempt(
            delivery,
            at=at,
            duration_us=int(duration * 1_000_000),
            status_code=status,
            error=error[:MAX_ERROR] if error else None,
            outcome=outcome,
            next_attempt_at=next_at,
        )
        if written and outcome != DeliveryState.PENDING:
            self.metrics.webhook_deliveries.inc(result=outcome.name.lower())
        log_extra = {"event_id": delivery.event_id, "endpoint_id": delivery.endpoint_id, "attempt": delivery.attempt}
        if kind == "delivered":
            log.info("webhook delivered", extra={**log_extra, "status": status})
        else:
            log.warning("webhook attempt failed", extra={**log_extra, "error": error, "gave_up": outcome.name == "FAILED"})

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_GRACE)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients.values():
            await client.aclose()


# -- endpoints from the config file -------------------------------------------------------


def config_endpoint_id(declared: WebhookEndpointConfig) -> str:
    """A declared endpoint's id, from what it is (its URL and workspace), so that it keeps
    its id and its pending deliveries across restarts."""
    digest = hashlib.sha256(f"{declared.url}\n{declared.workspace or ''}".encode()).hexdigest()
    return f"{wire.WEBHOOK_CONFIG_PREFIX}{digest[:24]}"


async def declare_config_endpoints(store: WebhookStore, keys: KeyStore, declared: Sequence[WebhookEndpointConfig]) -> None:
    """Write the config file's ``[[webhooks]]`` into the endpoints table (see
    ``WebhookStore.sync_config``); a named workspace is made if it does not exist yet."""
    from .api.auth import OPEN_WORKSPACE
    from .keys import new_workspace_id

    now = now_us()
    records = []
    for item in declared:
        workspace_id = None
        if item.workspace == OPEN_WORKSPACE and not await keys.workspace_named(item.workspace):
            workspace_id = OPEN_WORKSPACE  # open mode's batches belong to "default" itself
        elif item.workspace is not None:
            workspace_id = await keys.workspace_id(item.workspace, new_id=new_workspace_id(), now=now)
        events = wire.events_column(item.events or list(wire.BATCH_EVENTS))
        records.append(
            EndpointRecord.enabled(
                config_endpoint_id(item), item.url, item.name, item.description, events, workspace_id, item.secret,
                "config", now,
            )
        )  # fmt: skip
    await store.sync_config(records)
