"""Alembic keeps the schema's version from here on; the old stamp becomes a fence.

``bp_ledger_meta.schema_version`` was the version stamp before Alembic. It is set to 2 and
never changed again: a release from before Alembic reads it, finds a version newer than its
own and refuses the ledger instead of writing to tables it does not know.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

_meta = sa.table("bp_ledger_meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    op.execute(_meta.update().where(_meta.c.key == "schema_version").values(value="2"))


def downgrade() -> None:
    op.execute(_meta.update().where(_meta.c.key == "schema_version").values(value="1"))
