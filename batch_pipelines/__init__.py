"""batch_pipelines: run LLM work in Dagster on the cheapest lane that still meets its deadline.

The public surface is what ``__all__`` lists; everything else may change.
"""

from batch_pipelines.core.batches import BatchError, BatchInfo
from batch_pipelines.core.errors import (
    BatchPipelinesError,
    BudgetExceededError,
    ConfigError,
    InvalidInputError,
    LedgerError,
    MalformedResponseError,
    ProviderError,
    QueueFullError,
    UnknownModelError,
)
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.pricing import CostBreakdown, Discounts, ModelPrice, PriceBook, Rates
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.core.status import TERMINAL_STATUSES, BatchStatus
from batch_pipelines.core.usage import Usage
from batch_pipelines.services.router import CallResult, DeferredCall, Router

__all__ = [
    "BatchError",
    "BatchInfo",
    "BatchPipelinesError",
    "BatchStatus",
    "BudgetExceededError",
    "CallResult",
    "ConfigError",
    "CostBreakdown",
    "DeferredCall",
    "Discounts",
    "Endpoint",
    "InvalidInputError",
    "ItemOutcome",
    "LLMRequest",
    "Lane",
    "LedgerError",
    "MalformedResponseError",
    "ModelPrice",
    "OutcomeKind",
    "PriceBook",
    "ProviderError",
    "QueueFullError",
    "Rates",
    "Router",
    "TERMINAL_STATUSES",
    "UnknownModelError",
    "Usage",
]
