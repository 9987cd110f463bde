"""The file store of both Files APIs: file metadata and their bytes in chunks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("mime_type", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("chunks", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("state", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("downloadable", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("touched_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_files_workspace", "files", ["workspace_id", "id"])
    op.create_index(
        "ix_files_uploading",
        "files",
        ["touched_at"],
        postgresql_where=sa.text("state = 0"),
        sqlite_where=sa.text("state = 0"),
    )
    op.create_index(
        "ix_files_expiring",
        "files",
        ["expires_at"],
        postgresql_where=sa.text("expires_at IS NOT NULL"),
        sqlite_where=sa.text("expires_at IS NOT NULL"),
    )
    op.create_table(
        "file_chunks",
        sa.Column("file_id", _ID, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("file_id", "seq", name="pk_file_chunks"),
    )


def downgrade() -> None:
    op.drop_table("file_chunks")
    op.drop_index("ix_files_expiring", table_name="files")
    op.drop_index("ix_files_uploading", table_name="files")
    op.drop_index("ix_files_workspace", table_name="files")
    op.drop_table("files")
