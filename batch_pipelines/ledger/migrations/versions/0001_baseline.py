"""Baseline: the ledger's tables as schema version 1 created them (before Alembic).

A ledger made by a release before Alembic already has exactly these tables and is stamped
with this revision instead of running it. Frozen: later changes are new revisions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from batch_pipelines.ledger.schema import Money, UTCDateTime

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def _usage_columns() -> list[sa.Column[int]]:
    names = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
    return [sa.Column(name, sa.BigInteger, nullable=False, server_default=sa.text("0")) for name in names]


def upgrade() -> None:
    meta = op.create_table(
        "bp_ledger_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])
    op.create_table(
        "bp_items",
        sa.Column("job", sa.String(255), nullable=False),
        sa.Column("partition", sa.String(255), nullable=False),
        sa.Column("custom_id", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("lane", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("deadline", UTCDateTime),
        sa.Column("batch_key", sa.String(255)),
        sa.Column("estimated_input_tokens", sa.BigInteger),
        *_usage_columns(),
        sa.Column("cost_usd", Money, nullable=False, server_default=sa.text("0")),
        sa.Column("sync_equivalent_usd", Money, nullable=False, server_default=sa.text("0")),
        sa.Column("reason", sa.Text),
        sa.Column("status_code", sa.Integer),
        sa.Column("error_code", sa.String(255)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("job", "partition", "custom_id", name="pk_bp_items"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_bp_items_status", "bp_items", ["job", "partition", "status", "batch_key"])
    op.create_table(
        "bp_attempts",
        sa.Column("job", sa.String(255), nullable=False),
        sa.Column("partition", sa.String(255), nullable=False),
        sa.Column("custom_id", sa.String(64), nullable=False),
        sa.Column("batch_key", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("lane", sa.String(8), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(16)),
        sa.Column("reason", sa.Text),
        sa.Column("status_code", sa.Integer),
        sa.Column("error_code", sa.String(255)),
        *_usage_columns(),
        sa.Column("cost_usd", Money, nullable=False, server_default=sa.text("0")),
        sa.Column("sync_equivalent_usd", Money, nullable=False, server_default=sa.text("0")),
        sa.Column("closed_by", sa.String(32)),
        sa.Column("opened_at", UTCDateTime, nullable=False),
        sa.Column("closed_at", UTCDateTime),
        sa.PrimaryKeyConstraint("job", "partition", "custom_id", "batch_key", name="pk_bp_attempts"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "bp_submit_intents",
        sa.Column("intent_key", sa.String(255), primary_key=True),
        sa.Column("job", sa.String(255), nullable=False),
        sa.Column("partition", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(255), nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("round", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("file_id", sa.String(255)),
        sa.Column("vendor_batch_id", sa.String(255)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_bp_submit_intents_partition", "bp_submit_intents", ["job", "partition"])
    op.create_table(
        "bp_batches",
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("vendor_batch_id", sa.String(255), nullable=False),
        sa.Column("job", sa.String(255), nullable=False),
        sa.Column("partition", sa.String(255), nullable=False),
        sa.Column("intent_key", sa.String(255)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("vendor_status", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(64)),
        sa.Column("model", sa.String(255)),
        sa.Column("total", sa.Integer),
        sa.Column("completed", sa.Integer),
        sa.Column("failed", sa.Integer),
        sa.Column("input_file_id", sa.String(255)),
        sa.Column("output_file_id", sa.String(255)),
        sa.Column("error_file_id", sa.String(255)),
        sa.Column("results_url", sa.Text),
        sa.Column("errors", sa.Text),
        sa.Column("metadata", sa.Text),
        sa.Column("created_at", UTCDateTime),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("ended_at", UTCDateTime),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("reconcile_state", sa.String(16), nullable=False, server_default=sa.text("'none'")),
        sa.Column("reconcile_worker", sa.String(255)),
        sa.Column("reconcile_claimed_at", UTCDateTime),
        sa.PrimaryKeyConstraint("provider", "vendor_batch_id", name="pk_bp_batches"),
    )
    op.create_index("ix_bp_batches_partition", "bp_batches", ["job", "partition"])
    op.create_index("ix_bp_batches_status", "bp_batches", ["status"])
    op.create_index("ix_bp_batches_intent", "bp_batches", ["intent_key"])


def downgrade() -> None:
    for table in ("bp_batches", "bp_submit_intents", "bp_attempts", "bp_items", "bp_ledger_meta"):
        op.drop_table(table)
