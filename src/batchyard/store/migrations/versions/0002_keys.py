"""Workspaces and API keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    workspaces = op.create_table(
        "workspaces",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    # The workspace of open (keyless) mode: batches made before keys existed belong to it,
    # and keys created for workspace "default" see them.
    op.bulk_insert(workspaces, [{"id": "default", "name": "default", "created_at": 0}])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(256)),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("last_used_at", sa.BigInteger),
        sa.Column("disabled_at", sa.BigInteger),
    )
    op.create_index("ix_api_keys_workspace", "api_keys", ["workspace_id"])


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("workspaces")
