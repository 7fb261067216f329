"""The router's buffer of deferrable calls: queued calls, their flushes, and the answers kept for callers.

Before this revision the buffer created its own tables on first use, so a ledger may already
have them (with exactly these columns): each table is created only if it is missing.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from batch_pipelines.ledger.schema import UTCDateTime

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "bp_deferred_calls" not in existing:
        op.create_table(
            "bp_deferred_calls",
            sa.Column("call_id", sa.String(64), primary_key=True),
            sa.Column("idempotency_key", sa.String(255)),
            sa.Column("provider", sa.String(64), nullable=False),
            sa.Column("model", sa.String(255), nullable=False),
            sa.Column("endpoint", sa.String(64), nullable=False),
            sa.Column("body", sa.Text, nullable=False),
            sa.Column("deadline", UTCDateTime),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("flush_id", sa.String(64)),
            sa.Column("warning", sa.Text),
            sa.Column("created_at", UTCDateTime, nullable=False),
            sa.Column("updated_at", UTCDateTime, nullable=False),
        )
        op.create_index("ux_bp_deferred_calls_key", "bp_deferred_calls", ["idempotency_key"], unique=True)
        op.create_index(
            "ix_bp_deferred_calls_queue", "bp_deferred_calls", ["state", "provider", "model", "endpoint", "created_at"]
        )
        op.create_index("ix_bp_deferred_calls_flush", "bp_deferred_calls", ["flush_id"])
    if "bp_deferred_flushes" not in existing:
        op.create_table(
            "bp_deferred_flushes",
            sa.Column("flush_id", sa.String(64), primary_key=True),
            sa.Column("provider", sa.String(64), nullable=False),
            sa.Column("model", sa.String(255), nullable=False),
            sa.Column("endpoint", sa.String(64), nullable=False),
            sa.Column("lane", sa.String(8), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("worker", sa.String(255), nullable=False),
            sa.Column("claimed_at", UTCDateTime, nullable=False),
            sa.Column("call_count", sa.Integer, nullable=False),
            sa.Column("earliest_deadline", UTCDateTime),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("created_at", UTCDateTime, nullable=False),
            sa.Column("updated_at", UTCDateTime, nullable=False),
        )
        op.create_index("ix_bp_deferred_flushes_state", "bp_deferred_flushes", ["state", "created_at"])
    if "bp_deferred_responses" not in existing:
        op.create_table(
            "bp_deferred_responses",
            sa.Column("call_id", sa.String(64), nullable=False),
            sa.Column("batch_key", sa.String(255), nullable=False),
            sa.Column("body", sa.Text, nullable=False),
            sa.PrimaryKeyConstraint("call_id", "batch_key", name="pk_bp_deferred_responses"),
        )


def downgrade() -> None:
    for table in ("bp_deferred_responses", "bp_deferred_flushes", "bp_deferred_calls"):
        op.drop_table(table)
