"""The Admin API through the official SDK's ``client.organization`` (strict response
validation), on both databases: admin keys, the organization, workspaces and API keys;
who may call what."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from batchyard.api import admin as admin_routes
from support.databases import create_postgres_database, drop_postgres_database
from support.helpers import (
    KILL_CONFIG,
    admin_client,
    make_admin_key,
    make_client,
    make_key,
    simple_params,
    wait_for_end,
    wait_until,
)
from support.server import ServerProcess


def works(url: str, key: str) -> bool:
    try:
        make_client(url, api_key=key).messages.create(**simple_params())  # type: ignore[arg-type]
    except anthropic.AuthenticationError:
        return False
    return True


def test_workspaces_and_keys_through_client_organization(tmp_path: Path, fresh_database_url: str) -> None:
    alpha_key = make_key("alpha", fresh_database_url, tmp_path)
    admin_key = make_admin_key(fresh_database_url, tmp_path)
    proc = ServerProcess(fresh_database_url, config_text='[[models]]\nid = "*"\nbackend = "simulator"\n', workdir=tmp_path)
    proc.start()
    try:
        admin = admin_client(proc.url, admin_key)
        org = admin.organization.retrieve()
        assert org.type == "organization" and org.id and org.name == "batchyard"

        listed = admin.organization.workspaces.list()
        alpha = next(w for w in listed.data if w.name == "alpha")
        assert alpha.id.startswith("wrkspc_") and alpha.archived_at is None
        beta = admin.organization.workspaces.create(name="beta")
        assert beta.name == "beta" and beta.type == "workspace" and beta.data_residency.workspace_geo == "us"
        assert admin.organization.workspaces.retrieve(beta.id).id == beta.id
        renamed = admin.organization.workspaces.update(beta.id, name="beta-two")
        assert renamed.name == "beta-two"
        with pytest.raises(anthropic.BadRequestError, match="already exists"):
            admin.organization.workspaces.create(name="alpha")
        with pytest.raises(anthropic.NotFoundError):
            admin.organization.workspaces.retrieve("wrkspc_nope")

        keys = admin.organization.api_keys.list(workspace_id=alpha.id).data
        assert len(keys) == 1
        key = keys[0]
        assert key.type == "api_key" and key.status == "active" and key.partial_key_hint
        assert alpha_key.startswith(key.partial_key_hint.removesuffix("..."))
        assert key.scope.type == "workspace" and key.scope.workspace_id == alpha.id  # type: ignore[union-attr]
        assert admin.organization.api_keys.update(key.id, name="alpha ci").name == "alpha ci"
        assert admin.organization.api_keys.retrieve(key.id).name == "alpha ci"

        # A key turned inactive stops working at once; active again, it works again.
        assert works(proc.url, alpha_key)
        assert admin.organization.api_keys.update(key.id, status="inactive").status == "inactive"
        assert [k.id for k in admin.organization.api_keys.list(status="inactive").data] == [key.id]
        assert not works(proc.url, alpha_key)
        admin.organization.api_keys.update(key.id, status="active")
        assert works(proc.url, alpha_key)

        # An archived workspace's keys stop working; it leaves the default listing.
        archived = admin.organization.workspaces.archive(alpha.id)
        assert archived.archived_at is not None
        started = time.monotonic()
        wait_until(lambda: not works(proc.url, alpha_key), timeout=5, what="the archived workspace's key to stop")
        assert time.monotonic() - started < 1.5
        assert alpha.id not in [w.id for w in admin.organization.workspaces.list().data]
        assert alpha.id in [w.id for w in admin.organization.workspaces.list(include_archived=True).data]
        with pytest.raises(anthropic.BadRequestError):
            admin.organization.workspaces.update(alpha.id, name="alpha-again")

        # Input no stored id could match is refused before any database sees it (no 500).
        raw = httpx.Client(base_url=proc.url, headers={"x-api-key": admin_key, "anthropic-version": "2023-06-01"})
        assert raw.get("/v1/organizations/workspaces/abc%00def").status_code == 404
        assert raw.get("/v1/organizations/api_keys/" + "k" * 300).status_code == 404
        assert raw.get("/v1/organizations/api_keys", params={"after_id": "a\x00b"}).status_code == 400
        assert raw.post(f"/v1/organizations/api_keys/{key.id}", json={"name": "n" * 300}).status_code == 400
        too_big = {"limits": [{"type": "requests_per_minute", "value": 2**40}]}
        assert raw.post(f"/v1/organizations/workspaces/{beta.id}/rate_limits/rl_all_models", json=too_big).status_code == 400

        archived_key = admin.organization.api_keys.update(key.id, status="archived")
        assert archived_key.status == "archived"
        with pytest.raises(anthropic.BadRequestError, match="archived API key"):
            admin.organization.api_keys.update(key.id, status="active")
    finally:
        proc.stop()


def test_each_key_opens_its_own_api_only(tmp_path: Path, fresh_database_url: str) -> None:
    workspace_key = make_key("alpha", fresh_database_url, tmp_path)
    admin_key = make_admin_key(fresh_database_url, tmp_path)
    proc = ServerProcess(fresh_database_url, config_text='[[models]]\nid = "*"\nbackend = "simulator"\n', workdir=tmp_path)
    proc.start()
    try:
        with pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"):
            admin_client(proc.url, workspace_key).organization.retrieve()
        with pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"):
            admin_client(proc.url, workspace_key).organization.workspaces.list()
        with pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"):
            make_client(proc.url, api_key=admin_key).messages.create(**simple_params())  # type: ignore[arg-type]
        with pytest.raises(anthropic.AuthenticationError):
            make_client(proc.url, api_key=admin_key).messages.batches.list()
        assert works(proc.url, workspace_key)
        # An ordinary key at every admin route, whatever the method: the same refusal.
        for route in admin_routes.routes:
            path = re.sub(r"\{[a-z_]+\}", "x", route.path)
            for method in sorted(route.methods or ()):
                if method == "HEAD":
                    continue
                answer = httpx.request(
                    method, f"{proc.url}{path}", headers={"x-api-key": workspace_key, "anthropic-version": "2023-06-01"}
                )
                assert answer.status_code == 401, (method, path, answer.status_code)
                assert answer.json()["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
        headers = {"x-api-key": admin_key, "anthropic-version": "2023-06-01"}
        for path in ("/v1/organizations/users", "/v1/organizations/invites", "/v1/organizations/spend_limits"):
            answer = httpx.get(f"{proc.url}{path}", headers=headers)
            assert answer.status_code == 404 and answer.json()["type"] == "error"
    finally:
        proc.stop()


def test_an_admin_key_leaves_open_mode_open_and_the_admin_api_closed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'open.db'}"
    admin_key = make_admin_key(url, tmp_path)
    proc = ServerProcess(url, config_text='[[models]]\nid = "*"\nbackend = "simulator"\n', workdir=tmp_path)
    proc.start()
    try:
        assert works(proc.url, "any-key-at-all")  # no workspace key exists: still open mode
        with pytest.raises(anthropic.AuthenticationError):
            admin_client(proc.url, "any-key-at-all").organization.retrieve()
        assert admin_client(proc.url, admin_key).organization.retrieve().type == "organization"
    finally:
        proc.stop()


def test_an_archived_workspace_is_refused_by_every_api_process_within_a_second(tmp_path: Path) -> None:
    url = create_postgres_database()
    try:
        alpha_key = make_key("alpha", url, tmp_path)
        admin_key = make_admin_key(url, tmp_path)
        config = '[[models]]\nid = "*"\nbackend = "simulator"\n'
        first, second = (ServerProcess(url, config_text=config, workdir=tmp_path, extra_args=["--no-engine"]) for _ in range(2))
        first.start()
        second.start()
        try:
            assert works(second.url, alpha_key)
            admin = admin_client(first.url, admin_key)
            alpha = next(w for w in admin.organization.workspaces.list().data if w.name == "alpha")
            # A rate limit set through one process holds on the other within a second.
            limits = admin.organization.workspaces.rate_limits
            limits.update("rl_all_models", workspace_id=alpha.id, limits=[{"type": "requests_per_minute", "value": 1}])  # type: ignore[list-item]
            set_at = time.monotonic()

            def limited() -> bool:
                try:
                    for _ in range(2):
                        make_client(second.url, api_key=alpha_key).messages.create(**simple_params())  # type: ignore[arg-type]
                except anthropic.RateLimitError as exc:
                    return "rate limit of 1 requests per minute" in str(exc)
                return False

            wait_until(limited, timeout=5, what="the other process to enforce the new limit")
            assert time.monotonic() - set_at < 1.5  # one poll of two calls past the second
            limits.update("rl_all_models", workspace_id=alpha.id, limits=[{"type": "requests_per_minute", "value": None}])  # type: ignore[list-item]

            admin.organization.workspaces.archive(alpha.id)
            archived_at = time.monotonic()
            wait_until(lambda: not works(second.url, alpha_key), timeout=5, what="the other process to refuse the key")
            assert time.monotonic() - archived_at < 1.0
        finally:
            first.stop()
            second.stop()
    finally:
        drop_postgres_database(url)


def test_an_archived_workspaces_batches_stay_readable_to_admins(tmp_path: Path, fresh_database_url: str) -> None:
    alpha_key = make_key("alpha", fresh_database_url, tmp_path)
    beta_key = make_key("beta", fresh_database_url, tmp_path)
    admin_key = make_admin_key(fresh_database_url, tmp_path)
    proc = ServerProcess(fresh_database_url, config_text='[[models]]\nid = "*"\nbackend = "simulator"\n', workdir=tmp_path)
    proc.start()
    try:
        client = make_client(proc.url, api_key=alpha_key)
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"r{i}", "params": simple_params(f"line {i}")} for i in range(3)]  # type: ignore[misc]
        )
        wait_for_end(client, batch.id)
        results = {r.custom_id: r for r in client.messages.batches.results(batch.id)}
        admin = admin_client(proc.url, admin_key)
        alpha = next(w for w in admin.organization.workspaces.list().data if w.name == "alpha")
        admin.organization.workspaces.archive(alpha.id)
        wait_until(lambda: not works(proc.url, alpha_key), timeout=5, what="the archived workspace's key to be refused")

        console = httpx.Client(base_url=proc.url, headers={"x-api-key": admin_key}, timeout=30)
        info = console.get("/console/api/info").json()
        assert info["admin"] is True
        assert {"id": alpha.id, "name": "alpha", "archived": True} in info["workspaces"]
        listed = console.get("/console/api/batches", params={"workspace_id": alpha.id}).json()
        assert [b["id"] for b in listed["data"]] == [batch.id]
        shown = listed["data"][0]
        assert shown["counts"]["succeeded"] == 3
        assert (shown["cancel_path"], shown["delete_path"], shown["downloads"]) == (None, None, [])  # read only
        progress = console.get(f"/console/api/batches/{batch.id}/progress", params={"workspace_id": alpha.id}).json()
        assert progress["finished"] == 3
        lines = console.get(f"/console/api/batches/{batch.id}/lines", params={"workspace_id": alpha.id, "full": "1"}).json()
        assert {row["line"]["custom_id"]: row["line"]["result"]["message"]["content"][0]["text"] for row in lines["data"]} == {
            cid: r.result.message.content[0].text for cid, r in results.items()  # type: ignore[union-attr]
        }
        usage = console.get("/console/api/usage", params={"workspace_id": alpha.id}).json()
        assert usage["workspace"] == "alpha"
        assert sum(row["output_tokens"] for row in usage["by_model"]) == sum(r.result.message.usage.output_tokens for r in results.values())  # type: ignore[union-attr]

        # Read only, and only what it names: no workspace, an unknown one, the batch under another.
        missing = console.get("/console/api/batches")
        assert missing.status_code == 400 and "workspace_id" in missing.json()["error"]["message"]
        assert console.get("/console/api/batches", params={"workspace_id": "wrkspc_nope"}).status_code == 404
        beta = next(w for w in admin.organization.workspaces.list().data if w.name == "beta")
        assert console.get(f"/console/api/batches/{batch.id}/progress", params={"workspace_id": beta.id}).status_code == 404
        refused = console.get(f"/v1/messages/batches/{batch.id}", headers={"anthropic-version": "2023-06-01"})
        assert refused.status_code == 401
        # An ordinary key's workspace_id names nothing: it sees its own workspace only.
        as_beta = httpx.get(f"{proc.url}/console/api/batches", params={"workspace_id": alpha.id}, headers={"x-api-key": beta_key})
        assert as_beta.status_code == 200 and as_beta.json()["data"] == []
        assert httpx.get(f"{proc.url}/console/api/info", headers={"x-api-key": beta_key}).json()["admin"] is False
    finally:
        proc.stop()


def test_usage_report_equals_the_usage_in_answers_and_results(tmp_path: Path, fresh_database_url: str) -> None:
    keys = {name: make_key(name, fresh_database_url, tmp_path) for name in ("alpha", "beta")}
    admin_key = make_admin_key(fresh_database_url, tmp_path)
    proc = ServerProcess(fresh_database_url, config_text='[[models]]\nid = "*"\nbackend = "simulator"\n', workdir=tmp_path)
    proc.start()
    try:
        expected: dict[tuple[str, str, str], list[int]] = {}  # (workspace name, model, tier) -> [input, output]

        def add(workspace: str, model: str, tier: str, input_tokens: int, output_tokens: int) -> None:
            entry = expected.setdefault((workspace, model, tier), [0, 0])
            entry[0] += input_tokens
            entry[1] += output_tokens

        for index, (workspace, key) in enumerate(keys.items()):
            client = make_client(proc.url, api_key=key)
            model = f"sim-{workspace}"
            for i in range(3 + index):
                reply = client.messages.create(**simple_params(f"question {i} from {workspace}", model=model))  # type: ignore[arg-type]
                add(workspace, model, "standard", reply.usage.input_tokens, reply.usage.output_tokens)
            with client.messages.stream(**simple_params("a stream", model=model)) as stream:  # type: ignore[arg-type]
                final = stream.get_final_message()
            add(workspace, model, "standard", final.usage.input_tokens, final.usage.output_tokens)
            chat = openai.OpenAI(base_url=f"{proc.url}/v1", api_key=key, max_retries=0).chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hello"}]
            )
            assert chat.usage is not None
            add(workspace, model, "standard", chat.usage.prompt_tokens, chat.usage.completion_tokens)
            batch = client.messages.batches.create(
                requests=[{"custom_id": f"b{i}", "params": simple_params(f"line {i}", model=model)} for i in range(4 + index)]
            )
            wait_for_end(client, batch.id)
            for line in client.messages.batches.results(batch.id):
                assert line.result.type == "succeeded"
                usage = line.result.message.usage  # type: ignore[union-attr]
                assert usage.service_tier == "batch"
                add(workspace, model, "batch", usage.input_tokens, usage.output_tokens)

        admin = httpx.Client(base_url=proc.url, headers={"x-api-key": admin_key, "anthropic-version": "2023-06-01"})
        today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")

        def report(**params: object) -> list[dict[str, object]]:
            answer = admin.get("/v1/organizations/usage_report/messages", params={"starting_at": today, **params})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["has_more"] is False and len(body["data"]) == 7  # the default: seven 1d buckets
            return [r for bucket in body["data"] for r in bucket["results"]]

        names = {w.id: w.name for w in admin_client(proc.url, admin_key).organization.workspaces.list().data}

        def totals(rows: list[dict[str, object]], *fields: str) -> dict[tuple[object, ...], list[int]]:
            out: dict[tuple[object, ...], list[int]] = {}
            for row in rows:
                assert row["cache_read_input_tokens"] == 0 and row["cache_creation"]["ephemeral_5m_input_tokens"] == 0  # type: ignore[index]
                key = tuple(names.get(row[f], row[f]) if f == "workspace_id" else row[f] for f in fields)  # type: ignore[arg-type]
                entry = out.setdefault(key, [0, 0])
                entry[0] += row["uncached_input_tokens"]  # type: ignore[operator]
                entry[1] += row["output_tokens"]  # type: ignore[operator]
            return out

        def folded(*positions: int) -> dict[tuple[object, ...], list[int]]:
            out: dict[tuple[object, ...], list[int]] = {}
            for key, (i, o) in expected.items():
                entry = out.setdefault(tuple(key[p] for p in positions), [0, 0])
                entry[0] += i
                entry[1] += o
            return out

        # Interactive usage is added within a second of each answer.
        wait_until(lambda: totals(report(**{"group_by[]": "workspace_id"}), "workspace_id") == folded(0), timeout=10,
                   what="the report to count every call")
        assert totals(report(**{"group_by[]": ["model", "service_tier"]}), "model", "service_tier") == folded(1, 2)
        assert totals(report(**{"group_by[]": "service_tier"}), "service_tier") == folded(2)
        by_key = totals(report(**{"group_by[]": "api_key_id"}), "api_key_id")
        assert len(by_key) == 2 and sorted(by_key.values()) == sorted(folded(0).values())
        alpha_only = report(**{"group_by[]": "workspace_id", "workspace_ids[]": next(i for i, n in names.items() if n == "alpha")})
        assert totals(alpha_only, "workspace_id") == {("alpha",): folded(0)[("alpha",)]}
        # The SDK's own usage call (beta analytics): rows per group over the range, strict types.
        sdk = admin_client(proc.url, admin_key).beta.organization.analytics.usage
        rows = list(sdk.list(starting_at=today, group_by=["workspace_id", "service_tier"], limit=1))  # pages of one row
        by_group: dict[tuple[object, ...], list[int]] = {}
        for item in rows:
            group = (names[item.group.workspace_id], item.group.service_tier)  # type: ignore[index]
            by_group[group] = [item.usage.uncached_input_tokens, item.usage.output_tokens]
            assert item.usage.total_tokens == item.usage.uncached_input_tokens + item.usage.output_tokens
            assert item.group.model is None and item.usage.requests
        assert by_group == folded(0, 2)
        ordered = sdk.list(starting_at=today, group_by=["model"], order_by="output_tokens").data
        assert [i.usage.output_tokens for i in ordered] == sorted((i.usage.output_tokens for i in ordered), reverse=True)

        # /metrics: models a pattern route serves but does not list go by the route's id ("*"),
        # so made-up names cannot grow the label set.
        metrics = httpx.get(f"{proc.url}/metrics").text
        for (workspace, _model, tier), (_, output) in expected.items():
            workspace_id = next(i for i, n in names.items() if n == workspace)
            line = f'batchyard_tokens_total{{model="*",service_tier="{tier}",type="output",workspace="{workspace_id}"}}'
            assert any(row.startswith(line) and float(row.split()[-1]) == output for row in metrics.splitlines()), line
        hourly = admin.get(
            "/v1/organizations/usage_report/messages", params={"starting_at": today, "bucket_width": "1h", "limit": 24}
        ).json()
        assert len(hourly["data"]) == 24 and sum(len(b["results"]) for b in hourly["data"]) >= 1
    finally:
        proc.stop()




def test_usage_survives_kill_9_mid_batch_counted_once(tmp_path: Path, fresh_database_url: str) -> None:
    key = make_key("alpha", fresh_database_url, tmp_path)
    admin_key = make_admin_key(fresh_database_url, tmp_path)
    proc = ServerProcess(fresh_database_url, config_text=KILL_CONFIG, workdir=tmp_path)
    proc.start()
    try:
        client = make_client(proc.url, api_key=key)
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"k{i}", "params": simple_params(f"kill {i}")} for i in range(800)]
        )
        for pause in (0.4, 0.7, 0.5):
            time.sleep(pause)
            proc.kill()
            proc.start()
        wait_for_end(make_client(proc.url, api_key=key), batch.id, timeout=120)
        client = make_client(proc.url, api_key=key)
        input_tokens = output_tokens = 0
        for line in client.messages.batches.results(batch.id):
            usage = line.result.message.usage  # type: ignore[union-attr]
            input_tokens += usage.input_tokens
            output_tokens += usage.output_tokens
        answer = httpx.get(
            f"{proc.url}/v1/organizations/usage_report/messages",
            params={"starting_at": datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z"), "group_by[]": "service_tier"},
            headers={"x-api-key": admin_key, "anthropic-version": "2023-06-01"},
        ).json()
        rows = [r for bucket in answer["data"] for r in bucket["results"] if r["service_tier"] == "batch"]
        assert sum(r["uncached_input_tokens"] for r in rows) == input_tokens  # nothing lost, nothing twice
        assert sum(r["output_tokens"] for r in rows) == output_tokens
    finally:
        proc.stop()


PRICED = """
[usage]
batch_discount = 0.5

[[models]]
id = "priced"
backend = "simulator"
price_input_per_mtok = 3
price_output_per_mtok = 15

[[models]]
id = "*"
backend = "simulator"
"""


def test_cost_report_prices_usage_at_the_routes_prices(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cost.db'}"
    key = make_key("alpha", url, tmp_path)
    admin_key = make_admin_key(url, tmp_path)
    proc = ServerProcess(url, config_text=PRICED, workdir=tmp_path)
    proc.start()
    try:
        client = make_client(proc.url, api_key=key)
        cents = Decimal(0)
        for i in range(2):
            usage = client.messages.create(**simple_params(f"q{i}", model="priced")).usage  # type: ignore[arg-type]
            cents += (Decimal(usage.input_tokens) * 3 + Decimal(usage.output_tokens) * 15) / 1_000_000 * 100
        client.messages.create(**simple_params("free", model="free-model"))  # type: ignore[arg-type]
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"b{i}", "params": simple_params(f"line {i}", model="priced")} for i in range(3)]
        )
        wait_for_end(client, batch.id)
        for line in client.messages.batches.results(batch.id):
            usage = line.result.message.usage  # type: ignore[union-attr]
            cents += (Decimal(usage.input_tokens) * 3 + Decimal(usage.output_tokens) * 15) / 1_000_000 * 100 / 2
        admin = httpx.Client(base_url=proc.url, headers={"x-api-key": admin_key, "anthropic-version": "2023-06-01"})
        today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")

        def costs(**params: object) -> list[dict[str, object]]:
            body = admin.get("/v1/organizations/cost_report", params={"starting_at": today, **params}).json()
            return [r for bucket in body["data"] for r in bucket["results"]]

        def total() -> Decimal:
            return sum((Decimal(str(r["amount"])) for r in costs()), Decimal(0))

        wait_until(lambda: abs(total() - cents) < Decimal("0.00001"), timeout=10, what="the cost report to count every call")
        rows = costs(**{"group_by[]": ["workspace_id", "description"]})
        assert all(r["currency"] == "USD" and r["cost_type"] == "tokens" for r in rows)
        free = [r for r in rows if r["model"] == "free-model"]
        assert free and all(r["amount"] == "0" and "no price configured" in str(r["description"]) for r in free)
        batch_rows = [r for r in rows if r["model"] == "priced" and r["service_tier"] == "batch"]
        assert {r["token_type"] for r in batch_rows} == {"uncached_input_tokens", "output_tokens"}
        assert abs(sum((Decimal(str(r["amount"])) for r in rows), Decimal(0)) - cents) < Decimal("0.00001")
        bad = admin.get("/v1/organizations/cost_report", params={"starting_at": today, "bucket_width": "1h"})
        assert bad.status_code == 400 and "bucket_width" in bad.json()["error"]["message"]
    finally:
        proc.stop()


def test_workspace_rate_limits_set_through_the_admin_api_are_enforced(tmp_path: Path, fresh_database_url: str) -> None:
    key = make_key("alpha", fresh_database_url, tmp_path)
    admin_key = make_admin_key(fresh_database_url, tmp_path)
    config = (
        "[rate_limits]\nrequests_per_minute = 6000\nmax_queued_requests = 100\n\n"
        "[rate_limits.workspaces.alpha]\nrequests_per_minute = 1000\n\n"
        '[[models]]\nid = "slow"\nbackend = "simulator"\nlatency_ms = 2000\n\n[[models]]\nid = "*"\nbackend = "simulator"\n'
    )
    proc = ServerProcess(fresh_database_url, config_text=config, workdir=tmp_path)
    proc.start()
    try:
        admin = admin_client(proc.url, admin_key)
        alpha = next(w for w in admin.organization.workspaces.list().data if w.name == "alpha")
        limits = admin.organization.workspaces.rate_limits
        assert limits.list(alpha.id).data == []  # no Admin API overrides yet
        inherited = {e.rate_limit_id: e for e in limits.list(alpha.id, include_inherited=True).data}
        assert inherited["rl_batch"].group.type == "batch"
        assert (inherited["rl_batch"].limits[0].value, inherited["rl_batch"].limits[0].source.type) == (100, "organization")
        assert limits.list(alpha.id, group_type="batch").data == []

        entry = limits.update("rl_all_models", workspace_id=alpha.id, limits=[{"type": "requests_per_minute", "value": 2}])  # type: ignore[list-item]
        assert (entry.limits[0].value, entry.limits[0].source.type, entry.limits[0].org_limit) == (2, "workspace", 6000)
        client = make_client(proc.url, api_key=key)
        client.messages.create(**simple_params())  # type: ignore[arg-type]
        client.messages.create(**simple_params())  # type: ignore[arg-type]
        with pytest.raises(anthropic.RateLimitError, match="rate limit of 2 requests per minute"):
            client.messages.create(**simple_params())  # type: ignore[arg-type]
        limits.update("rl_all_models", workspace_id=alpha.id, limits=[{"type": "requests_per_minute", "value": None}])  # type: ignore[list-item]
        assert works(proc.url, key)  # back to the config file's 1,000 a minute

        limits.update("rl_batch", workspace_id=alpha.id, limits=[{"type": "max_queued_requests", "value": 1}])  # type: ignore[list-item]
        with pytest.raises(anthropic.RateLimitError, match="over its limit of 1"):
            client.messages.batches.create(
                requests=[{"custom_id": f"q{i}", "params": simple_params(model="slow")} for i in range(2)]
            )
        with pytest.raises(anthropic.BadRequestError, match="only limiter"):
            limits.update("rl_batch", workspace_id=alpha.id, limits=[{"type": "requests_per_minute", "value": 5}])  # type: ignore[list-item]
        with pytest.raises(anthropic.NotFoundError):
            limits.update("rl_nope", workspace_id=alpha.id, limits=[])
    finally:
        proc.stop()
