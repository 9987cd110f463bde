"""Webhooks against a real server and a real receiver on loopback: endpoints through the
SDK's ``client.beta.organization.webhooks``, events signed per Standard Webhooks and verified
by ``standardwebhooks`` and both SDKs' ``unwrap()``, retries with one ``webhook-id``, kill -9
before and during delivery, a receiver that never answers; and idempotent batch creates."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import standardwebhooks

from support.databases import query
from support.helpers import admin_client, make_admin_key, make_client, make_key, simple_params, wait_for_end, wait_until
from support.receiver import Receiver
from support.server import ServerProcess

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BETA = {"anthropic-beta": "webhooks-2026-10-07"}


def config(*hooks: str, delivery: str = "allow_private_networks = true\nretry_base = 0.2\n") -> str:
    return (
        f"[webhook_delivery]\n{delivery}\n"
        + "".join(f"[[webhooks]]\n{hook}\n" for hook in hooks)
        + '[[models]]\nid = "slow"\nbackend = "simulator"\nlatency_ms = 400\n\n'
        + '[[models]]\nid = "*"\nbackend = "simulator"\n'
    )


def hook(url: str, **extra: str) -> str:
    lines = [f'url = "{url}"', f'secret = "{SECRET}"'] + [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def verified(received: object, secret: str = SECRET) -> dict:  # type: ignore[type-arg]
    """The event, after all three verifiers accept its signature."""
    body, headers = received.body, received.headers  # type: ignore[attr-defined]
    event = standardwebhooks.Webhook(secret).verify(body.decode(), headers)
    anthropic.Anthropic(api_key="x").beta.webhooks.unwrap(body.decode(), headers=headers, key=secret)
    openai.OpenAI(api_key="x").webhooks.verify_signature(body, headers, secret=secret)
    return event  # type: ignore[no-any-return]


def run_batch(url: str, key: str = "test-key", n: int = 2, model: str = "claude-sim") -> str:
    client = make_client(url, api_key=key)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"r{i}", "params": simple_params(model=model)} for i in range(n)]  # type: ignore[misc]
    )
    wait_for_end(client, batch.id)
    return batch.id


def test_endpoints_through_client_beta_organization_webhooks(tmp_path: Path, fresh_database_url: str) -> None:
    alpha_key = make_key("alpha", fresh_database_url, tmp_path)
    beta_key = make_key("beta", fresh_database_url, tmp_path)
    admin_key = make_admin_key(fresh_database_url, tmp_path)
    proc = ServerProcess(
        fresh_database_url, config_text=config(hook("http://127.0.0.1:9/declared", workspace='"alpha"')), workdir=tmp_path
    )
    proc.start()
    try:
        strict = admin_client(proc.url, admin_key).beta.organization.webhooks
        made = strict.create(url="https://example.com/a", enabled_events=["external_key.failed"], name="sdk types")
        assert made.signing_secret.startswith("whsec_") and made.state == "enabled" and made.description == ""
        assert standardwebhooks.Webhook(made.signing_secret)  # a secret the verifiers take
        assert strict.retrieve(made.id).name == "sdk types"
        assert "signing_secret" not in strict.retrieve(made.id).model_dump()  # answered once

        # batchyard's events are outside the SDK's Literal: a client without strict validation.
        loose = anthropic.Anthropic(base_url=proc.url, api_key=admin_key, max_retries=0).beta.organization.webhooks
        alpha = next(w for w in admin_client(proc.url, admin_key).organization.workspaces.list().data if w.name == "alpha")
        batchy = loose.create(
            url="https://example.com/b", enabled_events=["message_batch.ended", "batch.completed"],  # type: ignore[list-item]
            description="ends", extra_body={"workspace_id": alpha.id},
        )
        assert batchy.enabled_events == ["message_batch.ended", "batch.completed"]
        assert batchy.model_extra is not None and batchy.model_extra["workspace_id"] == alpha.id
        updated = loose.update(batchy.id, state="disabled", name="renamed", enabled_events=["batch.failed"])  # type: ignore[list-item]
        assert (updated.state, updated.name, updated.enabled_events, updated.description) == (
            "disabled", "renamed", ["batch.failed"], "ends"
        )
        listed = loose.list()
        ids = [e.id for e in listed.data]
        assert ids[:2] == [batchy.id, made.id]  # newest first
        declared = [e for e in listed.data if e.model_extra and e.model_extra["source"] == "config"]
        assert len(declared) == 1 and declared[0].url == "http://127.0.0.1:9/declared"
        assert declared[0].model_extra["workspace_id"] == alpha.id  # type: ignore[index]
        assert [e.id for e in loose.list(order="asc", limit=1).data] == [ids[-1]]
        second = loose.list(limit=1, after_id=ids[0])
        assert [e.id for e in second.data] == [ids[1]] and second.has_more
        with pytest.raises(anthropic.BadRequestError, match="config file"):
            loose.update(declared[0].id, name="no")
        new_secret = loose.regenerate_signing_secret(made.id).signing_secret
        assert new_secret.startswith("whsec_") and new_secret != made.signing_secret
        assert loose.delete(made.id).type == "webhook_endpoint_deleted"

        # An endpoint made here hears of its workspace's batch ends, signed with its secret.
        receiver = Receiver().start()
        try:
            heard = loose.create(url=receiver.url, enabled_events=["message_batch.ended"], extra_body={"workspace_id": alpha.id})  # type: ignore[list-item]
            run_batch(proc.url, beta_key)  # another workspace's: not for it
            batch_id = run_batch(proc.url, alpha_key)
            wait_until(lambda: len(receiver.received) >= 1, timeout=30, what="the event")
            time.sleep(0.5)
            assert [verified(r, heard.signing_secret)["data"]["id"] for r in receiver.received] == [batch_id]
            loose.update(heard.id, state="disabled")
            run_batch(proc.url, alpha_key)
            time.sleep(1.0)
            assert len(receiver.received) == 1  # events while it is disabled are not sent to it
        finally:
            receiver.stop()
        with pytest.raises(anthropic.NotFoundError):
            loose.retrieve(made.id)

        # Bad input: an unknown event, a URL that is not one; no beta header; an ordinary key.
        with pytest.raises(anthropic.BadRequestError, match="unknown event type 'batch.exploded'"):
            loose.create(url="https://example.com/c", enabled_events=["batch.exploded"])  # type: ignore[list-item]
        with pytest.raises(anthropic.BadRequestError, match="http:// or https://"):
            loose.create(url="ftp://example.com/c", enabled_events=["batch.failed"])  # type: ignore[list-item]
        plain = httpx.get(f"{proc.url}/v1/organizations/webhooks", headers={"x-api-key": admin_key, "anthropic-version": "2023-06-01"})
        assert plain.status_code == 404 and "anthropic-beta: webhooks-2026-10-07" in plain.json()["error"]["message"]
        ordinary = httpx.get(
            f"{proc.url}/v1/organizations/webhooks", headers={"x-api-key": "test-key", "anthropic-version": "2023-06-01", **BETA}
        )
        assert ordinary.status_code == 401
    finally:
        proc.stop()


def test_batch_ends_are_delivered_signed_to_their_subscribers(tmp_path: Path, fresh_database_url: str) -> None:
    everything, only_beta, openai_only = Receiver().start(), Receiver().start(), Receiver().start()
    alpha_key = make_key("alpha", fresh_database_url, tmp_path)
    beta_key = make_key("beta", fresh_database_url, tmp_path)
    proc = ServerProcess(
        fresh_database_url,
        config_text=config(
            hook(everything.url),
            hook(only_beta.url, workspace='"beta"', events='["message_batch.ended"]'),
            hook(openai_only.url, events='["batch.completed", "batch.failed"]'),
        ),
        workdir=tmp_path,
    )
    proc.start()
    try:
        alpha_batch = run_batch(proc.url, alpha_key)
        beta_batch = run_batch(proc.url, beta_key, n=3)
        oa = openai.OpenAI(base_url=f"{proc.url}/v1", api_key=alpha_key, max_retries=0)
        uploaded = oa.files.create(
            file=("in.jsonl", b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}]}}\n'),
            purpose="batch",
        )
        completed = oa.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        bad = oa.files.create(file=("bad.jsonl", b'{"custom_id":"a"}\n'), purpose="batch")
        failed = oa.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert failed.status == "failed"

        wait_until(lambda: len(everything.received) >= 4, timeout=30, what="four events at the catch-all endpoint")
        wait_until(lambda: len(openai_only.received) >= 2, timeout=30, what="two OpenAI events")
        events = [verified(r) for r in everything.received]
        by_subject = {e["data"]["id"]: e for e in events}
        assert set(by_subject) == {alpha_batch, beta_batch, completed.id, failed.id}
        ended = by_subject[beta_batch]
        assert ended["type"] == "event" and ended["data"]["type"] == "message_batch.ended"
        assert ended["data"]["request_counts"] == {"processing": 0, "succeeded": 3, "errored": 0, "canceled": 0, "expired": 0}
        # The anthropic SDK parses the envelope; the data type is batchyard's own (read .type).
        parsed = anthropic.Anthropic(api_key="x").beta.webhooks.unwrap(
            everything.received[0].body.decode(), headers=everything.received[0].headers, key=SECRET
        )
        assert parsed.type == "event" and parsed.data.type in ("message_batch.ended", "batch.completed", "batch.failed")
        for received in everything.received:
            assert received.headers["webhook-id"] == json.loads(received.body)["id"]
        oa_events = {
            e.data.id: e.type
            for e in (openai.OpenAI(api_key="x").webhooks.unwrap(r.body, r.headers, secret=SECRET) for r in openai_only.received)
        }
        assert oa_events == {completed.id: "batch.completed", failed.id: "batch.failed"}

        wait_until(lambda: len(only_beta.received) >= 1, timeout=30, what="beta's event")
        time.sleep(1.0)  # anything else would have come by now
        assert [verified(r)["data"]["id"] for r in only_beta.received] == [beta_batch]
        assert len(everything.received) == 4 and len(openai_only.received) == 2

        metrics = httpx.get(f"{proc.url}/metrics").text
        assert 'batchyard_webhook_attempts_total{outcome="delivered"} 7' in metrics
        assert 'batchyard_webhook_deliveries{state="delivered"} 7' in metrics
        admin = make_admin_key(fresh_database_url, tmp_path)
        shown = httpx.get(f"{proc.url}/console/api/webhooks", headers={"x-api-key": admin}).json()
        assert len(shown["endpoints"]) == 3 and shown["deliveries"] == {"delivered": 7}
        assert {a["batch_id"] for a in shown["attempts"]} == {alpha_batch, beta_batch, completed.id, failed.id}
        assert all(a["status_code"] == 200 and a["delivery"] == "delivered" for a in shown["attempts"])
    finally:
        proc.stop()
        for receiver in (everything, only_beta, openai_only):
            receiver.stop()


def test_a_receiver_that_fails_twice_gets_three_attempts_with_one_webhook_id(tmp_path: Path) -> None:
    receiver = Receiver(fail_first=2).start()
    proc = ServerProcess(f"sqlite:///{tmp_path / 'db.sqlite'}", config_text=config(hook(receiver.url)), workdir=tmp_path)
    proc.start()
    try:
        batch_id = run_batch(proc.url)
        wait_until(lambda: len(receiver.received) >= 3, timeout=30, what="three attempts")
        time.sleep(1.0)  # a fourth would come within this if the third had not counted
        assert len(receiver.received) == 3
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
        assert {verified(r)["data"]["id"] for r in receiver.received} == {batch_id}
        gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
        assert all(gap >= 0.09 for gap in gaps)  # backed off (0.2 s base, jitter down to half)
        metrics = httpx.get(f"{proc.url}/metrics").text
        assert 'batchyard_webhook_attempts_total{outcome="http_error"} 2' in metrics
        assert 'batchyard_webhook_attempts_total{outcome="delivered"} 1' in metrics

        # `batchyard webhooks list`: the started endpoint with its deliveries, and one only
        # declared in a config no server has started with yet (nothing written).
        assert proc.config_path is not None
        later = tmp_path / "later.toml"
        later.write_text(proc.config_path.read_text() + "\n[[webhooks]]\n" + hook("https://example.com/later"))
        listed = subprocess.run(
            [sys.executable, "-m", "batchyard", "webhooks", "list", "--json", "--database", proc.database_url,
             "--config", str(later)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        rows = {row["url"]: row for row in map(json.loads, listed.stdout.splitlines())}
        assert rows[receiver.url]["state"] == "enabled" and rows[receiver.url]["source"] == "config"
        assert rows[receiver.url]["deliveries"] == {"pending": 0, "delivered": 1, "failed": 0}
        assert rows["https://example.com/later"]["state"] == "declared"
        assert query(proc.database_url, "SELECT count(*) FROM webhook_endpoints")[0][0] == 1
    finally:
        proc.stop()
        receiver.stop()


def test_kill_9_before_and_during_delivery_loses_no_event(tmp_path: Path, fresh_database_url: str) -> None:
    hanging = Receiver(hang=True).start()
    down = Receiver().start()
    down_port = down.port
    down.stop()  # nothing listens there: every attempt fails until it is back
    proc = ServerProcess(
        fresh_database_url,
        config_text=config(
            hook(hanging.url), hook(f"http://127.0.0.1:{down_port}/hooks"),
            delivery="allow_private_networks = true\nretry_base = 0.2\nretry_cap = 0.5\ntimeout = 3\n",
        ),
        workdir=tmp_path,
    )
    proc.start()
    try:
        batch_id = run_batch(proc.url)
        wait_until(lambda: hanging.open_requests == 1, timeout=30, what="an attempt in flight at the hanging receiver")
        proc.kill()  # during one delivery, before the other's first success
        hanging.hang = False
        back = Receiver().start(port=down_port)
        try:
            proc.start()
            wait_until(lambda: len(back.received) >= 1, timeout=30, what="the event at the receiver that was down")
            wait_until(lambda: len(hanging.received) >= 2, timeout=30, what="the attempt cut short, made again")
            assert {verified(r)["data"]["id"] for r in [*back.received, *hanging.received]} == {batch_id}
            assert len({r.headers["webhook-id"] for r in [*back.received, *hanging.received]}) == 1
        finally:
            back.stop()
    finally:
        proc.stop()
        hanging.stop()


def test_a_receiver_that_never_answers_is_tried_a_bounded_number_of_times_and_delays_no_one(tmp_path: Path) -> None:
    hanging, fine = Receiver(hang=True).start(), Receiver().start()
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        config_text=config(
            hook(hanging.url), hook(fine.url),
            delivery="allow_private_networks = true\nretry_base = 0.2\ntimeout = 1\nmax_age = 4\nper_endpoint = 2\n",
        ),
        workdir=tmp_path,
    )
    proc.start()
    try:
        batches = [run_batch(proc.url) for _ in range(4)]
        # Every event reaches the receiver that answers, while the other holds attempts open.
        wait_until(lambda: len(fine.received) >= 4, timeout=30, what="four events at the answering receiver")
        assert {verified(r)["data"]["id"] for r in fine.received} == set(batches)
        assert hanging.open_requests <= 2  # its per-endpoint cap, not every slot
        url = proc.database_url

        def given_up() -> bool:
            rows = query(url, "SELECT state FROM webhook_deliveries WHERE endpoint_id IN "
                         "(SELECT id FROM webhook_endpoints WHERE url LIKE '%" + str(hanging.port) + "%')")
            return len(rows) == 4 and all(r[0] == 2 for r in rows)

        wait_until(given_up, timeout=60, what="the silent receiver's deliveries to be given up")
        attempts = query(url, "SELECT count(*) FROM webhook_attempts WHERE error LIKE 'no answer within%'")[0][0]
        assert 4 <= attempts <= 4 * 8  # within max_age at a 1 s timeout: bounded
        metrics = httpx.get(f"{proc.url}/metrics").text
        assert 'batchyard_webhook_deliveries_total{result="failed"} 4' in metrics
    finally:
        proc.stop()
        hanging.stop()
        fine.stop()


def test_private_targets_are_refused_unless_allowed(tmp_path: Path) -> None:
    receiver = Receiver().start()
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        config_text=config(hook(receiver.url.replace("127.0.0.1", "localhost")), delivery="retry_base = 0.2\nmax_age = 1\n"),
        workdir=tmp_path,
    )
    proc.start()
    try:
        run_batch(proc.url)
        url = proc.database_url
        wait_until(lambda: query(url, "SELECT count(*) FROM webhook_attempts")[0][0] >= 1, timeout=30, what="an attempt")
        error = query(url, "SELECT error FROM webhook_attempts")[0][0]
        assert "localhost is 127.0.0.1" in error and "allow_private_networks" in error
        assert receiver.received == []
        assert 'batchyard_webhook_attempts_total{outcome="refused"}' in httpx.get(f"{proc.url}/metrics").text
    finally:
        proc.stop()
        receiver.stop()


# -- idempotent creates --------------------------------------------------------------------


def race(n: int, create: object) -> list[str]:
    """``create(i)`` from ``n`` threads released together; the ids they got. Any failure fails."""
    made: list[str] = []
    failures: list[BaseException] = []
    start = threading.Barrier(n)

    def one(i: int) -> None:
        try:
            start.wait()
            made.append(create(i))  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == [] and len(made) == n
    return made


def test_idempotent_create_raced_from_ten_clients_makes_one_batch(tmp_path: Path, fresh_database_url: str) -> None:
    proc = ServerProcess(fresh_database_url, config_text=config(), workdir=tmp_path)
    proc.start()
    try:
        requests = [{"custom_id": f"r{i}", "params": simple_params(model="slow")} for i in range(200)]
        clients = [make_client(proc.url) for _ in range(10)]
        made = race(
            10,
            lambda i: clients[i].messages.batches.create(requests=requests, extra_headers={"Idempotency-Key": "nightly-1"}).id,  # type: ignore[arg-type]
        )
        assert len(set(made)) == 1
        client = make_client(proc.url)
        assert [b.id for b in client.messages.batches.list().data] == made[:1]

        # The same key with another body: a 409 the SDK does not retry.
        raw = httpx.post(
            f"{proc.url}/v1/messages/batches",
            headers={"x-api-key": "k", "anthropic-version": "2023-06-01", "idempotency-key": "nightly-1"},
            json={"requests": requests[:1]},
        )
        assert raw.status_code == 409 and raw.headers["x-should-retry"] == "false"
        assert raw.json()["error"]["type"] == "conflict_error"
        assert "different request body" in raw.json()["error"]["message"]
        assert client.messages.batches.create(requests=requests[:1], extra_headers={"Idempotency-Key": "other"}).id != made[0]  # type: ignore[arg-type]

        # OpenAI's Batch API: the same, with its own key space.
        oa = openai.OpenAI(base_url=f"{proc.url}/v1", api_key="k", max_retries=0)
        uploaded = oa.files.create(
            file=("in.jsonl", b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"slow","messages":[{"role":"user","content":"hi"}]}}\n'),
            purpose="batch",
        )
        openai_clients = [openai.OpenAI(base_url=f"{proc.url}/v1", api_key="k", max_retries=0) for _ in range(10)]
        openai_made = race(
            10,
            lambda i: openai_clients[i].batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                extra_headers={"Idempotency-Key": "nightly-1"},
            ).id,
        )  # fmt: skip
        assert len(set(openai_made)) == 1
        assert [b.id for b in oa.batches.list().data] == openai_made[:1]
        with pytest.raises(openai.ConflictError, match="different request body"):
            oa.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h",
                extra_headers={"Idempotency-Key": "nightly-1"},
            )
    finally:
        proc.stop()


def test_idempotency_keys_hold_across_api_processes_on_postgresql(tmp_path: Path) -> None:
    from support.databases import create_postgres_database, drop_postgres_database

    url = create_postgres_database()
    try:
        procs = [ServerProcess(url, config_text=config(), workdir=tmp_path, extra_args=["--no-engine"]) for _ in range(2)]
        for proc in procs:
            proc.start()
        try:
            clients = [make_client(procs[i % 2].url) for i in range(10)]
            made = race(
                10,
                lambda i: clients[i].messages.batches.create(
                    requests=[{"custom_id": "a", "params": simple_params()}],  # type: ignore[list-item]
                    extra_headers={"Idempotency-Key": "across"},
                ).id,
            )
            assert len(set(made)) == 1
            assert query(url, "SELECT count(*) FROM batches")[0][0] == 1
        finally:
            for proc in procs:
                proc.stop()
    finally:
        drop_postgres_database(url)


def test_a_create_that_failed_may_be_retried_only_with_an_idempotency_key(tmp_path: Path) -> None:
    from support.databases import ADMIN_URL, create_postgres_database, drop_postgres_database

    url = create_postgres_database()
    name = url.rpartition("/")[2]
    proc = ServerProcess(url, config_text=config(), workdir=tmp_path, extra_args=["--no-engine"])
    proc.start()
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = {"requests": [{"custom_id": "a", "params": simple_params()}]}
    try:
        # The database goes away: no new connection, the pool's cut.
        query(ADMIN_URL, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        query(ADMIN_URL, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        keyed = httpx.post(f"{proc.url}/v1/messages/batches", headers={**headers, "idempotency-key": "k1"}, json=body, timeout=60)
        blind = httpx.post(f"{proc.url}/v1/messages/batches", headers=headers, json=body, timeout=60)
        assert keyed.status_code == blind.status_code == 503
        assert keyed.headers["x-should-retry"] == "true" and blind.headers["x-should-retry"] == "false"
        query(ADMIN_URL, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        client = make_client(proc.url, max_retries=5)
        first = client.messages.batches.create(**body, extra_headers={"Idempotency-Key": "k1"})  # type: ignore[arg-type]
        assert client.messages.batches.create(**body, extra_headers={"Idempotency-Key": "k1"}).id == first.id  # type: ignore[arg-type]
        assert query(url, "SELECT count(*) FROM batches")[0][0] == 1
    finally:
        query(ADMIN_URL, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        proc.stop()
        drop_postgres_database(url)


def test_one_endpoints_backlog_never_hides_anothers_due_delivery(fresh_database_url: str) -> None:
    import asyncio

    from batchyard.config import WebhookDelivery
    from batchyard.metrics import Metrics
    from batchyard.protocol import webhooks as wire
    from batchyard.protocol.timestamps import now_us
    from batchyard.store import migrate
    from batchyard.store.database import Database, parse_database_url
    from batchyard.store.webhooks import EndpointRecord, OutboxEvent, WebhookStore
    from batchyard.webhooks import WebhookSender

    async def scenario() -> dict[str, int]:
        db = Database(parse_database_url(fresh_database_url))
        await migrate.upgrade(db)
        try:
            store = WebhookStore(db)
            now = now_us()
            for i, name in enumerate(("slow", "fast")):
                await store.create_endpoint(
                    EndpointRecord(
                        f"whep_{name}", f"http://127.0.0.1:9/{name}", name, "", wire.events_column(["message_batch.ended"]),
                        f"ws_{name}", SECRET, "enabled", "", "api", now + i, now + i,
                    )
                )  # fmt: skip
            backlog = [
                OutboxEvent(f"evt_slow{i:04}", "message_batch.ended", "ws_slow", f"b{i}", b"{}", now - 10_000 + i)
                for i in range(300)
            ]
            await store.add(backlog)
            await store.add([OutboxEvent("evt_fast", "message_batch.ended", "ws_fast", "b", b"{}", now)])
            sender = WebhookSender(store, WebhookDelivery(concurrency=4, per_endpoint=2, allow_private_networks=True), Metrics())
            try:
                await sender.round()
            finally:
                await sender.close()
            return (await store.delivery_counts_by_endpoint())["whep_slow"]
        finally:
            await db.close()

    slow = asyncio.run(scenario())
    assert slow["pending"] + slow["failed"] == 300
    tried = query(fresh_database_url, "SELECT endpoint_id, count(*) FROM webhook_deliveries WHERE attempts > 0 GROUP BY endpoint_id")
    assert {endpoint: int(n) for endpoint, n in tried} == {"whep_slow": 2, "whep_fast": 1}  # the cap, and the other's turn
