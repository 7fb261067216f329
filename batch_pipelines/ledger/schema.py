"""The ledger's tables and their column types, as the newest migration (``migrations/``) leaves them.

Money is stored exactly on both dialects: NUMERIC(24, 12) on PostgreSQL, and on SQLite (whose
NUMERIC is a float) an integer count of 1e-12 USD, so that ``SUM`` stays exact in SQL. Times
are timezone-aware UTC on the way in and out (SQLite keeps them as naive UTC text).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

MONEY_SCALE = 12
_MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
_MONEY_LIMIT = Decimal(10) ** (24 - MONEY_SCALE)

INTENT_CREATED = "created"
INTENT_UPLOADED = "uploaded"
INTENT_SUBMITTED = "submitted"

RECONCILE_NONE = "none"
RECONCILE_RUNNING = "reconciling"
RECONCILE_DONE = "reconciled"


def to_money(value: Any) -> Decimal:
    """A Decimal at the ledger's scale (1e-12 USD); finer digits round half-even."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not an amount of money") from None
    if not amount.is_finite() or abs(amount) >= _MONEY_LIMIT:
        raise ValueError(f"{value!r} is not an amount of money the ledger can hold (|x| < {_MONEY_LIMIT})")
    return amount.quantize(_MONEY_QUANTUM, rounding=ROUND_HALF_EVEN)


def money_to_sqlite(value: Any) -> int:
    return int(to_money(value).scaleb(MONEY_SCALE))


def money_from_sqlite(value: int) -> Decimal:
    return Decimal(int(value)).scaleb(-MONEY_SCALE).quantize(_MONEY_QUANTUM)


class Money(TypeDecorator[Decimal]):
    """Exact USD amounts: NUMERIC on PostgreSQL, integer pico-dollars on SQLite."""

    impl = Numeric(24, MONEY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(24, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return money_to_sqlite(value) if dialect.name == "sqlite" else to_money(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return money_from_sqlite(value)
        return to_money(value)


def to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} given to the ledger; use a timezone-aware one")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on both dialects."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        utc = to_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


metadata = MetaData()

# The columns record_items writes; the rest start at their server defaults.
ITEM_STAGE_COLUMNS = (
    "job",
    "partition",
    "custom_id",
    "provider",
    "model",
    "endpoint",
    "lane",
    "status",
    "attempts",
    "deadline",
    "estimated_input_tokens",
    "created_at",
    "updated_at",
)


USAGE_COLUMNS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def _usage_columns() -> list[Column[Any]]:
    return [Column(name, BigInteger, nullable=False, server_default=text("0")) for name in USAGE_COLUMNS]


# The version stamp from before Alembic, frozen at 2 (see migrations/versions/0002): a release
# from before Alembic finds a version newer than its own and refuses the ledger.
ledger_meta = Table(
    "bp_ledger_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# One row per (job, partition, custom_id): where the item stands now, plus what it has cost so far.
items = Table(
    "bp_items",
    metadata,
    Column("job", String(255), nullable=False),
    Column("partition", String(255), nullable=False),
    Column("custom_id", String(64), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(255), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("lane", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("deadline", UTCDateTime),
    Column("batch_key", String(255)),
    Column("estimated_input_tokens", BigInteger),
    *_usage_columns(),
    Column("cost_usd", Money, nullable=False, server_default=text("0")),
    Column("sync_equivalent_usd", Money, nullable=False, server_default=text("0")),
    Column("reason", Text),
    Column("status_code", Integer),
    Column("error_code", String(255)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("job", "partition", "custom_id", name="pk_bp_items"),
    # One secondary index only (each one costs ~40% of insert speed): finds the pending, the
    # failed, or those still submitted under one batch key, without scanning the partition.
    Index("ix_bp_items_status", "job", "partition", "status", "batch_key"),
    # Clustered on the key: every hot statement finds items by (job, partition, custom_id).
    sqlite_with_rowid=False,
)

# One row per (item, batch_key): opened when the item is assigned to a batch, closed (outcome
# set) exactly once when that batch's answer is recorded. The key makes replays harmless.
attempts = Table(
    "bp_attempts",
    metadata,
    Column("job", String(255), nullable=False),
    Column("partition", String(255), nullable=False),
    Column("custom_id", String(64), nullable=False),
    Column("batch_key", String(255), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("lane", String(8), nullable=False),
    Column("model", String(255), nullable=False),
    Column("outcome", String(16)),
    Column("reason", Text),
    Column("status_code", Integer),
    Column("error_code", String(255)),
    *_usage_columns(),
    Column("cost_usd", Money, nullable=False, server_default=text("0")),
    Column("sync_equivalent_usd", Money, nullable=False, server_default=text("0")),
    # Which record_outcomes transaction closed this attempt, to find the rows it just closed.
    Column("closed_by", String(32)),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime),
    PrimaryKeyConstraint("job", "partition", "custom_id", "batch_key", name="pk_bp_attempts"),
    sqlite_with_rowid=False,
)

# The idempotency key of one shard's submission: written before any provider call.
submit_intents = Table(
    "bp_submit_intents",
    metadata,
    Column("intent_key", String(255), primary_key=True),
    Column("job", String(255), nullable=False),
    Column("partition", String(255), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(255), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("fingerprint", String(255), nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("round", Integer, nullable=False, server_default=text("0")),  # 0 first submission, 1+ retries
    Column("status", String(16), nullable=False),
    Column("file_id", String(255)),
    Column("vendor_batch_id", String(255)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_bp_submit_intents_partition", "job", "partition"),
)

batches = Table(
    "bp_batches",
    metadata,
    Column("provider", String(64), nullable=False),
    Column("vendor_batch_id", String(255), nullable=False),
    Column("job", String(255), nullable=False),
    Column("partition", String(255), nullable=False),
    Column("intent_key", String(255)),
    Column("status", String(16), nullable=False),
    Column("vendor_status", String(64), nullable=False),
    Column("endpoint", String(64)),
    Column("model", String(255)),
    Column("total", Integer),
    Column("completed", Integer),
    Column("failed", Integer),
    Column("input_file_id", String(255)),
    Column("output_file_id", String(255)),
    Column("error_file_id", String(255)),
    Column("results_url", Text),
    Column("errors", Text),  # JSON list of {code, message, line, param}
    Column("metadata", Text),  # JSON object of the batch's metadata
    Column("created_at", UTCDateTime),
    Column("expires_at", UTCDateTime),
    Column("ended_at", UTCDateTime),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("reconcile_state", String(16), nullable=False, server_default=text(f"'{RECONCILE_NONE}'")),
    Column("reconcile_worker", String(255)),
    Column("reconcile_claimed_at", UTCDateTime),
    PrimaryKeyConstraint("provider", "vendor_batch_id", name="pk_bp_batches"),
    Index("ix_bp_batches_partition", "job", "partition"),
    Index("ix_bp_batches_status", "status"),
    Index("ix_bp_batches_intent", "intent_key"),
)

# Per-connection scratch tables (emptied at commit on PostgreSQL, before each use on SQLite).
# One chunk of new items, on PostgreSQL only: COPY lands here, INSERT ... ON CONFLICT moves it on.
stage_metadata = MetaData()
item_stage = Table(
    "bp_item_stage",
    stage_metadata,
    *(Column(c.name, c.type) for c in items.columns if c.name in ITEM_STAGE_COLUMNS),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)

# One chunk of outcomes, joined against attempts and items.
outcome_stage = Table(
    "bp_outcome_stage",
    stage_metadata,
    Column("custom_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("reason", Text),
    Column("status_code", Integer),
    Column("error_code", String(255)),
    Column("model", String(255)),
    *_usage_columns(),
    Column("cost_usd", Money, nullable=False),
    Column("sync_equivalent_usd", Money, nullable=False),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)

# Per-connection scratch table: one chunk of custom_ids to move between statuses.
key_stage = Table(
    "bp_key_stage",
    stage_metadata,
    Column("custom_id", String(64), primary_key=True),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)
