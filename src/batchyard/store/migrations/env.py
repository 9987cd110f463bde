"""Alembic environment: runs on a connection handed over by batchyard.store.migrate."""

from alembic import context

from batchyard.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `batchyard db upgrade` (batchyard.store.migrate)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
