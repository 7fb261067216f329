"""Bring a ledger's schema to this release's head revision, in place, when a Ledger opens it.

The fast path is one read: the stored revision is the head, nothing to do. Otherwise, in one
write transaction (serialised between processes: BEGIN IMMEDIATE on SQLite, an advisory lock
on PostgreSQL), a ledger made before Alembic is stamped with the baseline revision its tables
match, and every revision after the stored one runs. A ledger at a revision this release does
not know was upgraded by a newer release and is refused, untouched.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, inspect, select

from batch_pipelines.core.errors import LedgerError
from batch_pipelines.ledger.database import Database
from batch_pipelines.ledger.schema import ledger_meta

# Not Alembic's default "alembic_version": Dagster's own storage keeps its revision under that
# name, and a user may put the ledger in the same PostgreSQL database.
VERSION_TABLE = "bp_alembic_version"
# The revision whose tables a pre-Alembic ledger (stamped schema_version 1) already has.
BASELINE_REVISION = "0001"
_LEGACY_VERSION = "1"
# Any 64-bit constant: serialises migrations between processes on PostgreSQL.
_SCHEMA_LOCK_KEY = 0x6270_6C65_6467_6572
_HERE = Path(__file__).resolve().parent


@functools.cache
def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(_HERE))


def head_revision() -> str:
    head = script_directory().get_current_head()
    if head is None:
        raise AssertionError(f"no ledger revisions under {_HERE / 'versions'}")
    return head


def stored_revision(connection: Connection) -> str | None:
    """The revision the ledger's version table holds; None for a new or a pre-Alembic ledger."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade_in_place(db: Database) -> None:
    head = head_revision()
    with db.reading() as connection:
        if stored_revision(connection) == head:
            return

    def work(connection: Connection) -> None:
        if db.dialect == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
        current = stored_revision(connection)  # again: another process may have upgraded meanwhile
        if current == head:
            return
        config = Config()
        config.set_main_option("script_location", str(_HERE))
        config.attributes["connection"] = connection
        if current is None and _legacy_version(connection) is not None:
            _check_legacy(db, _legacy_version(connection))
            command.stamp(config, BASELINE_REVISION)
        elif current is not None:
            _check_known(db, current, head)
        command.upgrade(config, "head")

    db.write(work)


def _legacy_version(connection: Connection) -> str | None:
    if not inspect(connection).has_table(ledger_meta.name):
        return None
    value = connection.scalar(select(ledger_meta.c.value).where(ledger_meta.c.key == "schema_version"))
    return None if value is None else str(value)


def _check_legacy(db: Database, version: str | None) -> None:
    if version != _LEGACY_VERSION:
        raise LedgerError(
            f"ledger {db.url_for_display} has schema version {version} but no Alembic revision; "
            f"only a version {_LEGACY_VERSION} ledger (made before Alembic) can be upgraded in place",
            found_version=version,
        )


def _check_known(db: Database, current: str, head: str) -> None:
    known = {script.revision for script in script_directory().walk_revisions()}
    if current not in known:
        raise LedgerError(
            f"ledger {db.url_for_display} has schema revision {current!r}, unknown to this batch_pipelines "
            f"(its newest is {head!r}): a newer release upgraded it; upgrade batch_pipelines to use it",
            found_revision=current,
            code_revision=head,
        )
