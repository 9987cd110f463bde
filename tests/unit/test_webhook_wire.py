"""Webhooks, pure parts: signatures the verifiers take, the address check, retry delays, the
config file's [[webhooks]] and [webhook_delivery]."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import openai
import pytest
import standardwebhooks

from batchyard.config import ConfigError, Settings, WebhookDelivery, load_config_file
from batchyard.protocol import webhooks as wire
from batchyard.webhooks import Refused, resolve, retry_delay

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_signature_is_standard_webhooks_and_tampering_breaks_it() -> None:
    body = wire.openai_batch_event("evt_1", 1_764_770_000_000_000, "batch.expired", "batch_1")
    headers = wire.sign(SECRET, "evt_1", int(time.time()), body)
    assert headers["webhook-signature"].startswith("v1,")
    assert standardwebhooks.Webhook(SECRET).verify(body.decode(), headers)["type"] == "batch.expired"
    event = openai.OpenAI(api_key="x").webhooks.unwrap(body, headers, secret=SECRET)
    assert event.type == "batch.expired" and event.data.id == "batch_1" and event.created_at == 1_764_770_000
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(body.decode().replace("batch_1", "batch_2"), headers)
    other = wire.new_secret()
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(other).verify(body.decode(), headers)


def test_secrets_are_whsec_base64_of_enough_bytes() -> None:
    assert len(wire.secret_key(wire.new_secret())) == wire.SECRET_BYTES
    for bad, why in (("abc", "starts with whsec_"), ("whsec_!!!", "base64"), ("whsec_YWJj", "at least 16")):
        with pytest.raises(ValueError, match=why):
            wire.secret_key(bad)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x", "http://localhost:9000/x", "http://10.1.2.3/", "http://192.168.0.1/",
        "http://172.16.5.5/", "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/", "http://0.0.0.0/",
    ],
)  # fmt: skip
def test_loopback_private_and_link_local_targets_are_refused(url: str) -> None:
    with pytest.raises(Refused, match="loopback, private or link-local"):
        asyncio.run(resolve(url, allow_private=False))


def test_a_public_address_is_pinned_and_private_ones_pass_when_allowed() -> None:
    target = asyncio.run(resolve("https://93.184.215.14:8443/hook?x=1", allow_private=False))
    assert (target.url, target.host, target.sni) == ("https://93.184.215.14:8443/hook?x=1", "93.184.215.14:8443", "93.184.215.14")
    local = asyncio.run(resolve("http://localhost:9000/h", allow_private=True))
    assert local.url in ("http://127.0.0.1:9000/h", "http://[::1]:9000/h") and local.host == "localhost:9000"
    assert local.sni is None


def test_retry_delays_double_with_jitter_up_to_the_cap() -> None:
    settings = WebhookDelivery(retry_base=2.0, retry_cap=60.0)
    rng = random.Random(7)
    delays = [retry_delay(n, settings, rng) for n in range(1, 10)]
    assert 1.0 <= delays[0] < 2.0  # the first retry within seconds
    for n, delay in enumerate(delays, start=1):
        assert min(60.0, 2.0 * 2 ** (n - 1)) * 0.5 <= delay < min(60.0, 2.0 * 2 ** (n - 1))


def _load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "c.toml"
    path.write_text(text)
    settings = Settings()
    load_config_file(path, settings)
    return settings


def test_the_config_file_declares_endpoints_and_delivery(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        "[webhook_delivery]\nallow_private_networks = true\nmax_age = 600\n\n"
        f'[[webhooks]]\nurl = "http://127.0.0.1:9000/hooks"\nsecret = "{SECRET}"\nworkspace = "research"\n'
        'events = ["message_batch.ended", "batch.completed"]\n\n'
        f'[[webhooks]]\nurl = "https://example.com/h"\nsecret = "{SECRET}"\n',
    )
    assert settings.webhook_delivery.allow_private_networks and settings.webhook_delivery.max_age == 600
    assert [w.workspace for w in settings.webhooks] == ["research", None]
    assert settings.webhooks[1].events is None  # every batch event


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[webhooks]]\nurl = "ftp://x/"\nsecret = "S"\n', "webhooks[0].url: must be an http:// or https:// URL"),
        ('[[webhooks]]\nurl = "http://x/"\nsecret = "nope"\n', "webhooks[0].secret: a webhook secret starts with whsec_"),
        ('[[webhooks]]\nurl = "http://x/"\nsecret = "S"\nevents = ["batch.nope"]\n', "webhooks[0].events: unknown event"),
        ('[[webhooks]]\nurl = "http://x/"\nsecret = "S"\ncolour = 1\n', "webhooks[0].colour: unknown key"),
        ('[[webhooks]]\nsecret = "S"\n', "webhooks[0].url: Field required"),
        ("[webhook_delivery]\nmax_age = 0\n", "[webhook_delivery].max_age"),
        ("webhooks = 3\n", "must be an array of tables"),
    ],
)
def test_bad_webhook_config_is_refused_with_its_place(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        _load(tmp_path, body.replace('"S"', f'"{SECRET}"'))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::a00:5]/",  # NAT64 of 10.0.0.5
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[2002:a00:5::1]/",  # 6to4 of 10.0.0.5
        "http://[64:ff9b:1::1]/",  # local-use NAT64
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    ],
)
def test_ipv6_forms_that_carry_a_private_ipv4_address_are_refused(url: str) -> None:
    with pytest.raises(Refused):
        asyncio.run(resolve(url, allow_private=False))


def test_a_nat64_form_of_a_public_address_is_public() -> None:
    assert asyncio.run(resolve("http://[64:ff9b::5db8:d70e]/", allow_private=False)).url == "http://[64:ff9b::5db8:d70e]:80/"


def test_urls_are_checked_before_they_are_stored() -> None:
    from batchyard.protocol.errors import ApiError

    assert wire.check_url("https://bücher.example/hook") == "https://bücher.example/hook"  # an international name
    for bad, why in (
        ("https://x.com/\x00", "control characters"),
        ("https://x .com/", "spaces"),
        ("http://a..b/", "not a valid host name"),
        ("http://" + "a" * 64 + ".com/", "not a valid host name"),
        ("http://user:pw@x.com/", "credentials"),
    ):
        with pytest.raises(ApiError, match=why):
            wire.check_url(bad)


def test_an_international_name_travels_in_its_dns_form() -> None:
    with pytest.raises(Refused, match="cannot resolve 'xn--bcher-kva.invalid'"):
        asyncio.run(resolve("https://bücher.invalid/hook", allow_private=True))


def test_config_endpoints_must_be_distinct_and_fit_their_columns(tmp_path: Path) -> None:
    twice = f'[[webhooks]]\nurl = "http://x/"\nsecret = "{SECRET}"\n\n[[webhooks]]\nurl = "http://x/"\nsecret = "{SECRET}"\n'
    with pytest.raises(ConfigError, match=r"webhooks\[1\].url: the same url and workspace as webhooks\[0\]"):
        _load(tmp_path, twice)
    long_secret = "whsec_" + "A" * 200
    with pytest.raises(ConfigError, match=r"webhooks\[0\].secret"):
        _load(tmp_path, f'[[webhooks]]\nurl = "http://x/"\nsecret = "{long_secret}"\n')
