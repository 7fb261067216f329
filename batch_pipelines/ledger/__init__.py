"""The durable state of batch_pipelines: items, attempts, submit intents and batches (SQL)."""

from batch_pipelines.core.item_status import RETRYABLE_ITEM_STATUSES, TERMINAL_ITEM_STATUSES, ItemStatus
from batch_pipelines.ledger.engine import default_ledger_path, mask_url
from batch_pipelines.ledger.item_columns import ITEM_COLUMN_TYPES
from batch_pipelines.ledger.ledger import PROMOTION_KEY_PREFIX, Ledger
from batch_pipelines.ledger.rows import (
    AttemptGroup,
    BatchRow,
    IntentRow,
    ItemRow,
    ModelTotals,
    PartitionTotals,
)

__all__ = [
    "ITEM_COLUMN_TYPES",
    "PROMOTION_KEY_PREFIX",
    "RETRYABLE_ITEM_STATUSES",
    "TERMINAL_ITEM_STATUSES",
    "AttemptGroup",
    "BatchRow",
    "IntentRow",
    "ItemRow",
    "ItemStatus",
    "Ledger",
    "ModelTotals",
    "PartitionTotals",
    "default_ledger_path",
    "mask_url",
]
