"""How many times a request's lease was lost while it ran (a crashed or hung worker).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "batch_requests", sa.Column("lease_losses", sa.SmallInteger, nullable=False, server_default=sa.text("0"))
    )


def downgrade() -> None:
    with op.batch_alter_table("batch_requests") as table:
        table.drop_column("lease_losses")
