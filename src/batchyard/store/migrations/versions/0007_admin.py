"""The Admin API: admin keys (no workspace; they open /v1/organizations/* only), archived
keys and archived workspaces.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("api_keys", sa.Column("archived_at", sa.BigInteger))
    op.add_column("workspaces", sa.Column("archived_at", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.drop_column("archived_at")
        table.drop_column("admin")
    with op.batch_alter_table("workspaces") as table:
        table.drop_column("archived_at")
