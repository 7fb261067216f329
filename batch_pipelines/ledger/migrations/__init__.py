"""The ledger's schema history as Alembic revisions; a ledger upgrades in place when it is opened.

``Ledger(url)`` calls ``upgrade_in_place``: a new database gets every revision, an older
ledger the ones it lacks, in one transaction; the revision lives in ``bp_alembic_version``.
A ledger made before Alembic (``bp_ledger_meta.schema_version = 1``) is stamped with the
baseline ``0001``, whose tables it already has, and upgraded from there.

To change the schema (a new table, a column, an index):

1. Copy the newest file in ``versions/`` to ``versions/000N_what_it_does.py``; set
   ``revision = "000N"`` and ``down_revision`` to the previous one's id. Write ``upgrade()``
   with ``alembic.op`` (``op.create_table``, ``op.add_column``, ``op.create_index``; on SQLite,
   alter a table inside ``with op.batch_alter_table(name) as batch:``) and ``downgrade()``.
   Spell the columns out: a revision is frozen history and must not import live tables.
2. Make the same change to the tables in ``ledger/schema.py``.
3. Run ``batch_pipelines_tests/ledger/test_migrations.py`` (SQLite and PostgreSQL): it fails
   while the revisions and ``schema.py`` disagree, and checks an old ledger upgrades intact.

Never edit a revision that has been released: users' ledgers have already run it.
"""

from batch_pipelines.ledger.migrations.runner import (
    BASELINE_REVISION,
    VERSION_TABLE,
    head_revision,
    script_directory,
    stored_revision,
    upgrade_in_place,
)

__all__ = [
    "BASELINE_REVISION",
    "VERSION_TABLE",
    "head_revision",
    "script_directory",
    "stored_revision",
    "upgrade_in_place",
]
