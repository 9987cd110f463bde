"""Batches and their requests (the work queue).

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("api_version", sa.String(16), nullable=False),
        sa.Column("processing_status", sa.String(16), nullable=False),
        sa.Column("request_count", sa.Integer, nullable=False),
        sa.Column("succeeded", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("errored", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("canceled", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("expired", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("ended_at", sa.BigInteger),
        sa.Column("cancel_initiated_at", sa.BigInteger),
        sa.Column("archived_at", sa.BigInteger),
    )
    op.create_index("ix_batches_workspace", "batches", ["workspace_id", "id"])
    op.create_index(
        "ix_batches_open",
        "batches",
        ["processing_status"],
        postgresql_where=sa.text("processing_status <> 'ended'"),
        sqlite_where=sa.text("processing_status <> 'ended'"),
    )
    op.create_table(
        "batch_requests",
        sa.Column("batch_id", _ID, nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("custom_id", sa.String(64), nullable=False),
        sa.Column("model", sa.Text),
        sa.Column("params", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_expires_at", sa.BigInteger),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("result", sa.LargeBinary),
        sa.Column("finished_at", sa.BigInteger),
        sa.PrimaryKeyConstraint("batch_id", "idx", name="pk_batch_requests"),
    )
    op.create_index("ix_batch_requests_state", "batch_requests", ["batch_id", "state", "idx"])
    op.create_index(
        "ix_batch_requests_leases",
        "batch_requests",
        ["lease_expires_at"],
        postgresql_where=sa.text("state = 1"),
        sqlite_where=sa.text("state = 1"),
    )


def downgrade() -> None:
    op.drop_table("batch_requests")
    op.drop_table("batches")
