"""Schema migrations (Alembic), run explicitly (`batchyard db upgrade`) or at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from .database import Database

_SCRIPTS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x62796D67  # "bymg"


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer batchyard than this one."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def known_revisions() -> set[str]:
    return {rev.revision for rev in ScriptDirectory.from_config(_config()).walk_revisions()}


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _current(sync_conn: Any) -> str | None:
    return MigrationContext.configure(sync_conn).get_current_revision()


async def upgrade(db: Database) -> str:
    """Bring the schema to the newest revision this version knows; return it.

    Refuses (SchemaTooNew) a database stamped with a revision it does not know."""

    def run(sync_conn: Any) -> None:
        if sync_conn.dialect.name == "postgresql":
            # Servers starting together take turns; the later ones find nothing to do.
            sync_conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        revision = _current(sync_conn)
        if revision is not None and revision not in known_revisions():
            raise SchemaTooNew(
                f"the database schema is at revision {revision!r}, newer than this batchyard knows "
                f"(newest known: {head_revision()!r}); upgrade batchyard"
            )
        config = _config()
        config.attributes["connection"] = sync_conn
        command.upgrade(config, "head")

    async with db.write() as conn:
        await conn.run_sync(run)
    return head_revision()
