"""Request-rate buckets shared by every API process (used on PostgreSQL).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Float(precision=53), nullable=False),
        sa.Column("stamp", sa.BigInteger, nullable=False),
        sa.Column("granted", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
