"""Webhooks on the wire, pure: the events batchyard sends (Anthropic's envelope for Message
Batches, OpenAI's event objects for its Batch API), their Standard Webhooks signature, and
the webhook endpoint objects of ``client.beta.organization.webhooks``.

The signature is Standard Webhooks' (https://www.standardwebhooks.com): ``webhook-id``,
``webhook-timestamp`` (Unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">``, keyed by the base64 after ``whsec_``. ``standardwebhooks``,
``anthropic``'s ``client.beta.webhooks.unwrap()`` and ``openai``'s
``client.webhooks.unwrap()`` all verify it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from .admin import ORGANIZATION_ID
from .errors import ApiError, invalid_request, not_found
from .timestamps import to_rfc3339

# batchyard's own events: the one Message Batches event (an extension of Anthropic's event
# set: Anthropic sends no batch events) and OpenAI's four batch events, as OpenAI names them.
MESSAGE_BATCH_ENDED = "message_batch.ended"
OPENAI_BATCH_EVENTS = ("batch.completed", "batch.failed", "batch.cancelled", "batch.expired")
BATCH_EVENTS = (MESSAGE_BATCH_ENDED, *OPENAI_BATCH_EVENTS)
# The event types the SDK's ``enabled_events`` lists: accepted (so a client that validates
# what it sends and reads keeps working) but never sent, batchyard has none of those things.
SDK_EVENTS = (
    "external_key.failed",
    "external_key.recovered",
    "external_storage.failed",
    "external_storage.recovered",
    "user_profile.enforcement_action_opened",
    "user_profile.enforcement_action_resolved",
    "user_profile.program_status_updated",
)
KNOWN_EVENTS = (*BATCH_EVENTS, *SDK_EVENTS)
SECRET_PREFIX = "whsec_"
WEBHOOK_CONFIG_PREFIX = "whep_cfg_"  # endpoints declared in the config file
SECRET_BYTES = 24
BETA = "webhooks-2026-10-07"  # the beta the SDK sends on every webhook endpoint call
MAX_ENDPOINTS = 32  # "at most 32 organization webhook endpoints, enabled or disabled"
MAX_URL = 2048
MAX_NAME = 256
MAX_DESCRIPTION = 4096


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if len(key) < 16:
        raise ValueError("a webhook secret holds at least 16 bytes")
    return key


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one delivery attempt."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
        "content-type": "application/json",
    }


def message_batch_ended(event_id: str, now: int, batch_id: str, workspace_id: str, counts: Mapping[str, int]) -> bytes:
    """Anthropic's event envelope (``BetaWebhookEvent``) around batchyard's
    ``message_batch.ended`` data: the batch's id, workspace, final counts and end time."""
    return orjson.dumps(
        {
            "id": event_id,
            "type": "event",
            "created_at": to_rfc3339(now),
            "data": {
                "type": MESSAGE_BATCH_ENDED,
                "id": batch_id,
                "organization_id": ORGANIZATION_ID,
                "workspace_id": workspace_id,
                "processing_status": "ended",
                "request_counts": {
                    "processing": 0,
                    **{kind: int(counts.get(kind, 0)) for kind in ("succeeded", "errored", "canceled", "expired")},
                },
                "ended_at": to_rfc3339(now),
            },
        }
    )


def openai_batch_event(event_id: str, now: int, event_type: str, batch_id: str) -> bytes:
    """OpenAI's event object (``types/webhooks/batch_*_webhook_event.py``)."""
    return orjson.dumps(
        {"id": event_id, "object": "event", "created_at": now // 1_000_000, "type": event_type, "data": {"id": batch_id}}
    )


def openai_event_type(status: str) -> str | None:
    """The event of an OpenAI batch that reached this status, if it is an end."""
    event = f"batch.{status}"
    return event if event in OPENAI_BATCH_EVENTS else None


# -- endpoints ---------------------------------------------------------------------------


def events_column(events: Sequence[str]) -> str:
    """Events as stored: ",a,b," so that one LIKE finds an endpoint's subscription on both
    databases."""
    return "," + ",".join(events) + ","


def events_of(column: str) -> list[str]:
    return [e for e in column.split(",") if e]


def endpoint(record: Any, *, secret: str | None = None) -> dict[str, Any]:
    """``BetaOrganizationWebhookEndpoint`` (``BetaNewOrganizationWebhookEndpoint`` with its
    secret, once). ``workspace_id`` and ``source`` are batchyard's: the workspace whose
    batches it hears of (null: every one) and where it was declared (``api`` or ``config``)."""
    shown: dict[str, Any] = {
        "id": record.id,
        "type": "webhook_endpoint",
        "created_at": to_rfc3339(record.created_at),
        "description": record.description,
        "disabled_reason": record.disabled_reason,
        "enabled_events": events_of(record.events),
        "name": record.name,
        "state": record.state,
        "updated_at": to_rfc3339(record.updated_at),
        "url": record.url,
        "workspace_id": record.workspace_id,
        "source": record.source,
    }
    if secret is not None:
        shown["signing_secret"] = secret
    return shown


def check_url(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise invalid_request("url: Field required" if value is None else "url: Input should be a valid string")
    if len(value) > MAX_URL:
        raise invalid_request(f"url: at most {MAX_URL} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise invalid_request("url: must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise invalid_request("url: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid_request("url: must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise invalid_request("url: must not carry credentials")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise invalid_request(f"url: {parts.hostname[:128]!r} is not a valid host name") from None
    return value


def check_events(value: Any, *, required: bool) -> list[str] | None:
    if value is None:
        if required:
            raise invalid_request("enabled_events: Field required")
        return None
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        raise invalid_request("enabled_events: Input should be a valid list of strings")
    if not value:
        if required:
            raise invalid_request("enabled_events: must list at least one event type")
        return None  # an update's empty list leaves the set as it is
    for event in value:
        if event not in KNOWN_EVENTS:
            raise invalid_request(
                f"enabled_events: unknown event type {event[:128]!r} (known: {', '.join(KNOWN_EVENTS)})"
            )
    return list(dict.fromkeys(value))


def check_text(value: Any, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_request(f"{name}: Input should be a valid string")
    if len(value) > limit or "\x00" in value:
        raise invalid_request(f"{name}: at most {limit} characters, and no NUL")
    return value


def endpoint_not_found(endpoint_id: str) -> ApiError:
    return not_found(f"Webhook endpoint {endpoint_id[:128]} not found.")
