"""The durable state of batch_pipelines: items, attempts, submit intents and batches (SQL)."""

from batch_pipelines.ledger.engine import default_ledger_path, mask_url
from batch_pipelines.ledger.ledger import Ledger
from batch_pipelines.ledger.rows import (
    ITEM_STATUSES,
    RETRYABLE_STATUSES,
    TERMINAL_ITEM_STATUSES,
    AttemptGroup,
    BatchRow,
    IntentRow,
    ItemRow,
    ModelTotals,
    PartitionTotals,
)
from batch_pipelines.ledger.schema import PENDING, SCHEMA_VERSION, SUBMITTED

__all__ = [
    "ITEM_STATUSES",
    "PENDING",
    "RETRYABLE_STATUSES",
    "SCHEMA_VERSION",
    "SUBMITTED",
    "TERMINAL_ITEM_STATUSES",
    "AttemptGroup",
    "BatchRow",
    "IntentRow",
    "ItemRow",
    "Ledger",
    "ModelTotals",
    "PartitionTotals",
    "default_ledger_path",
    "mask_url",
]
