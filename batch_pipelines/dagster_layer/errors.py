"""Failures the Dagster layer raises: ``dagster.Failure`` subclasses carrying their evidence.

Each wraps one of the core errors so the run page shows the message and the metadata (ids,
counts, amounts), never a stack trace of our internals and never a secret. ``failure_for``
is the one place a core error is matched to its failure, so a broken configuration or a
ledger that contradicts itself is never reported as the provider's fault:

    BatchPipelinesError            -> BatchPipelinesFailure
     ├── ConfigError (UnknownModelError)  -> ConfigurationFailure  (not retried: fix the config)
     ├── InvalidInputError         -> InvalidPartitionInput        (not retried: fix the rows)
     ├── BudgetExceededError       -> BudgetExceeded               (not retried: raise the budget)
     ├── WorkloadError             -> WorkloadFailure              (not retried: fix the workload's code)
     ├── ProviderError (and its subclasses) -> ProviderFailure     (Dagster's run retries may help)
     └── LedgerError               -> LedgerFailure
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from batch_pipelines.core.errors import (
    BatchPipelinesError,
    BudgetExceededError,
    ConfigError,
    InvalidInputError,
    LedgerError,
    ProviderError,
    WorkloadError,
)
from batch_pipelines.providers.retry import RetryPolicy


class BatchPipelinesFailure(dg.Failure):
    """Base of the failures this plugin raises in a run."""

    # Whether Dagster's retry policies may run the step again (dagster.Failure's own default is True).
    # A broken configuration, bad rows or a budget breach fail the same way every time.
    allow_retries_by_default: bool = True

    @classmethod
    def from_error(cls, error: BatchPipelinesError) -> BatchPipelinesFailure:
        return cls(
            description=error.message, metadata=_metadata(error.details), allow_retries=cls.allow_retries_by_default
        )


class ConfigurationFailure(BatchPipelinesFailure):
    """The configuration cannot be used as written (provider registry, key, price book, model)."""

    allow_retries_by_default = False


class InvalidPartitionInput(BatchPipelinesFailure):
    """The upstream rows cannot become requests (missing columns, empty partition, bad ids)."""

    allow_retries_by_default = False


class BudgetExceeded(BatchPipelinesFailure):
    """The estimated cost is above the workload's budget; nothing was sent."""

    allow_retries_by_default = False


class WorkloadFailure(BatchPipelinesFailure):
    """The workload's own code raised (parse_response): the item and traceback are in the metadata."""

    allow_retries_by_default = False


class ProviderFailure(BatchPipelinesFailure):
    """The provider refused or failed in a way retries could not fix."""

    @classmethod
    def from_error(cls, error: BatchPipelinesError) -> BatchPipelinesFailure:
        # Only a failure that may go differently next time is worth Dagster's retry: no answer,
        # 408/409/429 or 5xx. A 400-class refusal would be refused again.
        status = error.status_code if isinstance(error, ProviderError) else None
        transient = status is None or RetryPolicy.retryable_status(status)
        return cls(description=error.message, metadata=_metadata(error.details), allow_retries=transient)


class LedgerFailure(BatchPipelinesFailure):
    """The ledger's state contradicts itself or the request made of it."""


# Most specific first: UnknownModelError is a ConfigError, QueueFullError a ProviderError.
_FAILURE_FOR: tuple[tuple[type[BatchPipelinesError], type[BatchPipelinesFailure]], ...] = (
    (ConfigError, ConfigurationFailure),
    (InvalidInputError, InvalidPartitionInput),
    (BudgetExceededError, BudgetExceeded),
    (WorkloadError, WorkloadFailure),
    (ProviderError, ProviderFailure),
    (LedgerError, LedgerFailure),
)


def failure_for(error: BatchPipelinesError) -> BatchPipelinesFailure:
    """The Dagster failure that reports ``error``: its message, its evidence, the right class."""
    for error_type, failure_type in _FAILURE_FOR:
        if isinstance(error, error_type):
            return failure_type.from_error(error)
    return BatchPipelinesFailure.from_error(error)


def _metadata(details: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in details.items():
        if value is None:
            continue
        if isinstance(value, (int, float, str, bool)):
            out[key] = value
        else:
            out[key] = str(value)
    return out
