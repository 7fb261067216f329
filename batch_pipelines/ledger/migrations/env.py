"""Alembic's environment for the ledger: runs on the connection the Ledger opened, inside its transaction.

``upgrade_in_place`` (in this package) hands the connection over through ``config.attributes``;
the migrations run in the caller's write transaction, so a failed upgrade leaves nothing half done.
"""

from __future__ import annotations

from alembic import context

from batch_pipelines.ledger import deferred_schema  # noqa: F401  (its tables join ``metadata``)
from batch_pipelines.ledger.migrations.runner import VERSION_TABLE
from batch_pipelines.ledger.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the ledger's migrations run when a Ledger opens its database (batch_pipelines.ledger.Ledger(url)); "
        "they need the connection it passes in config.attributes['connection']"
    )
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
