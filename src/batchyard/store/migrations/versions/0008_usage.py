"""Usage accounting: minute, hour and day buckets of tokens by workspace, key, model and tier; which key
created a batch; per-workspace rate limits set through the Admin API.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("key_id", sa.String(64)))
    op.create_table(
        "usage_buckets",
        sa.Column("width", sa.BigInteger, nullable=False),
        sa.Column("start", sa.BigInteger, nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("service_tier", sa.String(16), nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("uncached_input_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_creation_input_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_read_input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "width", "start", "workspace_id", "key_id", "model", "service_tier", name="pk_usage_buckets"
        ),
        sqlite_with_rowid=False,  # rows stored in key order: a report's time range is one sequential read
    )
    op.create_table(
        "workspace_limits",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("requests_per_minute", sa.Integer),
        sa.Column("max_queued_requests", sa.Integer),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workspace_limits")
    op.drop_table("usage_buckets")
    with op.batch_alter_table("batches") as table:
        table.drop_column("key_id")
