"""OpenAI's Batch API on the same batches table: which API a batch came through, its
endpoint, its input, output and error files, its details (metadata, errors, usage) and
when its files were written; custom ids as long as OpenAI's.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("api", sa.String(16), nullable=False, server_default=sa.text("'anthropic'")))
    op.add_column("batches", sa.Column("endpoint", sa.String(64)))
    op.add_column("batches", sa.Column("input_file_id", sa.String(64)))
    op.add_column("batches", sa.Column("output_file_id", sa.String(64)))
    op.add_column("batches", sa.Column("error_file_id", sa.String(64)))
    op.add_column("batches", sa.Column("details", sa.LargeBinary))
    op.add_column("batches", sa.Column("finalized_at", sa.BigInteger))
    op.create_index(
        "ix_batches_unfinalized",
        "batches",
        ["id"],
        postgresql_where=sa.text("api = 'openai' AND finalized_at IS NULL"),
        sqlite_where=sa.text("api = 'openai' AND finalized_at IS NULL"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Widening a varchar is a catalogue change on PostgreSQL; SQLite does not enforce lengths.
        op.alter_column("batch_requests", "custom_id", type_=sa.String(512), existing_nullable=False)


def downgrade() -> None:
    op.drop_index("ix_batches_unfinalized", "batches")
    with op.batch_alter_table("batches") as table:
        for name in ("finalized_at", "details", "error_file_id", "output_file_id", "input_file_id", "endpoint", "api"):
            table.drop_column(name)
