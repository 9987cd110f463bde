"""Tables. The work queue is ``batch_requests`` itself: one row per request, its params as
submitted, its state, lease and result. Times are integer microseconds since the epoch."""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

# Batch ids sort by creation time only under a byte-wise collation.
_BYTEWISE_ID = String(64).with_variant(String(64, collation="C"), "postgresql")


class RequestState(IntEnum):
    PENDING = 0
    RUNNING = 1
    SUCCEEDED = 2
    ERRORED = 3
    CANCELED = 4
    EXPIRED = 5

    @property
    def result_type(self) -> str:
        return self.name.lower()


OPEN_STATES = (RequestState.PENDING, RequestState.RUNNING)

batches = Table(
    "batches",
    metadata,
    Column("id", _BYTEWISE_ID, primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("api_version", String(16), nullable=False),
    Column("processing_status", String(16), nullable=False),
    Column("request_count", Integer, nullable=False),
    Column("succeeded", Integer, nullable=False, server_default=text("0")),
    Column("errored", Integer, nullable=False, server_default=text("0")),
    Column("canceled", Integer, nullable=False, server_default=text("0")),
    Column("expired", Integer, nullable=False, server_default=text("0")),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger),
    Column("cancel_initiated_at", BigInteger),
    Column("archived_at", BigInteger),
    # Which Batch API the batch came through: "anthropic" (Message Batches) or "openai"
    # (OpenAI's Batch API: its lines name ``endpoint``, its input and output are files).
    Column("api", String(16), nullable=False, server_default=text("'anthropic'")),
    Column("endpoint", String(64)),
    Column("input_file_id", String(64)),
    Column("output_file_id", String(64)),
    Column("error_file_id", String(64)),
    Column("details", LargeBinary),  # JSON: metadata, errors, usage, model, output file ttl
    # When an OpenAI batch's output and error files were written (its end, for its API).
    Column("finalized_at", BigInteger),
    Column("key_id", String(64)),  # the API key that created it: its lines' usage is that key's
    Index("ix_batches_workspace", "workspace_id", "id"),
    Index(
        "ix_batches_open",
        "processing_status",
        postgresql_where=text("processing_status <> 'ended'"),
        sqlite_where=text("processing_status <> 'ended'"),
    ),
    Index(
        "ix_batches_unfinalized",
        "id",
        postgresql_where=text("api = 'openai' AND finalized_at IS NULL"),
        sqlite_where=text("api = 'openai' AND finalized_at IS NULL"),
    ),
)

batch_requests = Table(
    "batch_requests",
    metadata,
    Column("batch_id", _BYTEWISE_ID, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("custom_id", String(512), nullable=False),  # 64 in Message Batches, longer in OpenAI's
    Column("model", Text),
    Column("params", LargeBinary, nullable=False),
    Column("state", SmallInteger, nullable=False, server_default=text("0")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # Leases that lapsed while this request ran (its worker crashed or hung): past a limit
    # the request is a poison line and ends errored instead of being claimed again.
    Column("lease_losses", SmallInteger, nullable=False, server_default=text("0")),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", BigInteger),
    Column("next_attempt_at", BigInteger, nullable=False, server_default=text("0")),
    Column("result", LargeBinary),
    Column("finished_at", BigInteger),
    PrimaryKeyConstraint("batch_id", "idx", name="pk_batch_requests"),
    Index("ix_batch_requests_state", "batch_id", "state", "idx"),
    Index(
        "ix_batch_requests_leases",
        "lease_expires_at",
        postgresql_where=text("state = 1"),
        sqlite_where=text("state = 1"),
    ),
)

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("archived_at", BigInteger),  # its keys stop working; its batches and files stay
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("name", String(256)),
    Column("prefix", String(32), nullable=False),  # shown in listings; the secret is only hashed
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger),
    Column("disabled_at", BigInteger),  # inactive (or archived) from then on
    Column("archived_at", BigInteger),  # archived: for good
    # An admin key belongs to no workspace (workspace_id ""): it opens the Admin API only.
    Column("admin", Boolean, nullable=False, server_default=text("false")),
    Index("ix_api_keys_workspace", "workspace_id"),
)

# One requests-per-minute bucket per API key, shared by every API process on PostgreSQL:
# ``tokens`` as of ``stamp`` (microseconds, the database's clock), ``granted`` what the
# last grab took out.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("capacity", Integer, nullable=False),
    Column("tokens", Float(precision=53), nullable=False),
    Column("stamp", BigInteger, nullable=False),
    Column("granted", Integer, nullable=False),
)


class FileState(IntEnum):
    UPLOADING = 0  # bytes still arriving: seen by nothing but its own upload and the sweeper
    READY = 1
    EXPIRED = 2  # past expires_at: the bytes are gone, the metadata stays a while


# One row per file of either Files API; its bytes are ``file_chunks`` rows of at most
# CHUNK_BYTES each (store/files.py), so no file is ever one value in memory.
files = Table(
    "files",
    metadata,
    Column("id", _BYTEWISE_ID, primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("filename", Text, nullable=False),
    Column("mime_type", String(255), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("size_bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("chunks", Integer, nullable=False, server_default=text("0")),
    Column("state", SmallInteger, nullable=False, server_default=text("0")),
    Column("downloadable", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger),
    Column("touched_at", BigInteger, nullable=False),  # the last chunk written (uploads in progress)
    Index("ix_files_workspace", "workspace_id", "id"),
    Index(
        "ix_files_uploading",
        "touched_at",
        postgresql_where=text("state = 0"),
        sqlite_where=text("state = 0"),
    ),
    Index(
        "ix_files_expiring",
        "expires_at",
        postgresql_where=text("expires_at IS NOT NULL"),
        sqlite_where=text("expires_at IS NOT NULL"),
    ),
)

file_chunks = Table(
    "file_chunks",
    metadata,
    Column("file_id", _BYTEWISE_ID, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("file_id", "seq", name="pk_file_chunks"),
)


# Tokens used, in buckets of a minute, an hour and a UTC day (each use is added to all three,
# so a report reads the width it asks for, not 60 or 1,440 times as many rows): one row per
# bucket, workspace, API key ("" for none), model and service tier ("batch" for batch lines,
# "standard" for interactive calls). Batch lines add to it in the transaction that writes
# their result, so it is never lost or doubled; interactive calls within a second.
usage_buckets = Table(
    "usage_buckets",
    metadata,
    Column("width", BigInteger, nullable=False),  # microseconds: a minute, an hour or a day
    Column("start", BigInteger, nullable=False),  # microseconds at the bucket's start
    Column("workspace_id", String(64), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("model", String(256), nullable=False),
    Column("service_tier", String(16), nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("uncached_input_tokens", BigInteger, nullable=False),
    Column("cache_creation_input_tokens", BigInteger, nullable=False),
    Column("cache_read_input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    PrimaryKeyConstraint("width", "start", "workspace_id", "key_id", "model", "service_tier", name="pk_usage_buckets"),
    sqlite_with_rowid=False,
)


# Per-workspace limits set through the Admin API (``client.organization.workspaces.rate_limits``);
# a value here wins over the config file's for that workspace, NULL falls back to it.
workspace_limits = Table(
    "workspace_limits",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("requests_per_minute", Integer),
    Column("max_queued_requests", Integer),
    Column("updated_at", BigInteger, nullable=False),
)


class DeliveryState(IntEnum):
    PENDING = 0  # due at next_attempt_at (or in the hands of the engine whose lease runs)
    DELIVERED = 1  # a 2xx answer
    FAILED = 2  # given up: past the delivery's max age


# Webhook endpoints: made through the Admin API (``source`` "api") or declared in the config
# file (``source`` "config", written here at start so both kinds are one table). ``events``
# as ",a,b," (one LIKE finds a subscription on both databases); ``workspace_id`` NULL hears
# of every workspace's batches. The secret is kept as given: it signs every delivery.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("name", String(256), nullable=False),
    Column("description", Text, nullable=False),
    Column("events", Text, nullable=False),
    Column("workspace_id", String(64)),
    Column("secret", String(128), nullable=False),
    Column("state", String(16), nullable=False),  # enabled | disabled
    Column("disabled_reason", Text, nullable=False),
    Column("source", String(16), nullable=False),  # api | config
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# The outbox: an event is written in the transaction that ends its batch, with one delivery
# row per endpoint subscribed to it then; deliveries are leased, tried and retried from here.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", String(64), primary_key=True),  # also the webhook-id of every attempt
    Column("type", String(64), nullable=False),
    Column("workspace_id", String(64), nullable=False),
    Column("subject", String(64), nullable=False),  # the batch's id
    Column("payload", LargeBinary, nullable=False),  # the body, exactly as sent
    Column("created_at", BigInteger, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("event_id", String(64), nullable=False),
    Column("endpoint_id", String(64), nullable=False),
    Column("state", SmallInteger, nullable=False, server_default=text("0")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("lease_until", BigInteger),  # an engine is trying it until then
    Column("created_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),
    Column("last_status", Integer),
    Column("last_error", Text),
    PrimaryKeyConstraint("event_id", "endpoint_id", name="pk_webhook_deliveries"),
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        postgresql_where=text("state = 0"),
        sqlite_where=text("state = 0"),
    ),
)

# One row per attempt, for the console and for whoever asks why a receiver heard nothing.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("event_id", String(64), nullable=False),
    Column("endpoint_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("duration_us", BigInteger, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    PrimaryKeyConstraint("event_id", "endpoint_id", "attempt", name="pk_webhook_attempts"),
    Index("ix_webhook_attempts_at", "at"),
)

# Idempotency-Key of a batch create: a retry with the same key and body gets the same batch
# for a day; the row is written in the create's own transaction, so two concurrent creates
# with one key make one batch (the second waits on the key, then finds the first's).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("api", String(16), nullable=False),  # anthropic | openai: one key space each
    Column("key", String(255), nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("batch_id", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("workspace_id", "api", "key", name="pk_idempotency_keys"),
    Index("ix_idempotency_keys_created", "created_at"),
)
