"""The buffer's tables: deferrable calls waiting for a flush, the flushes, and the answers kept for callers.

A call is written once (``queued``), claimed by exactly one flush with a compare-and-set on its
state (``claimed``), and marked ``flushed`` once that flush's batch exists (or its sync run has
recorded). From then on its outcome, usage and cost are the ledger item of job ``deferred``,
partition = the flush id, custom_id = the call id; the response body the vendor returned is
kept in ``bp_deferred_responses`` under the attempt that produced it.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, PrimaryKeyConstraint, String, Table, Text

from batch_pipelines.ledger.schema import UTCDateTime, metadata

CALL_QUEUED = "queued"
CALL_CLAIMED = "claimed"
CALL_FLUSHED = "flushed"

FLUSH_CLAIMED = "claimed"  # calls taken from the buffer; nothing sent yet, or a send under way
FLUSH_SUBMITTED = "submitted"  # its batch exists (or its sync run is recorded): collect it
FLUSH_COLLECTED = "collected"  # every call of it has its terminal outcome

deferred_calls = Table(
    "bp_deferred_calls",
    metadata,
    Column("call_id", String(64), primary_key=True),
    Column("idempotency_key", String(255)),
    Column("provider", String(64), nullable=False),
    Column("model", String(255), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("body", Text, nullable=False),  # the request body as the caller sent it (JSON)
    Column("deadline", UTCDateTime),
    Column("state", String(16), nullable=False),
    Column("flush_id", String(64)),
    Column("warning", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ux_bp_deferred_calls_key", "idempotency_key", unique=True),
    # The queue: waiting calls of one group, oldest first.
    Index("ix_bp_deferred_calls_queue", "state", "provider", "model", "endpoint", "created_at"),
    Index("ix_bp_deferred_calls_flush", "flush_id"),
)

deferred_flushes = Table(
    "bp_deferred_flushes",
    metadata,
    Column("flush_id", String(64), primary_key=True),  # also the ledger partition of its items
    Column("provider", String(64), nullable=False),
    Column("model", String(255), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("lane", String(8), nullable=False),
    Column("state", String(16), nullable=False),
    Column("worker", String(255), nullable=False),
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("call_count", Integer, nullable=False),
    Column("earliest_deadline", UTCDateTime),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_bp_deferred_flushes_state", "state", "created_at"),
)

deferred_responses = Table(
    "bp_deferred_responses",
    metadata,
    Column("call_id", String(64), nullable=False),
    Column("batch_key", String(255), nullable=False),
    Column("body", Text, nullable=False),  # the vendor's response body, as its sync endpoint returns it
    PrimaryKeyConstraint("call_id", "batch_key", name="pk_bp_deferred_responses"),
)

DEFERRED_TABLES = (deferred_calls, deferred_flushes, deferred_responses)
