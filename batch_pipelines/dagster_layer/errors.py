"""Failures the Dagster layer raises: ``dagster.Failure`` subclasses carrying their evidence.

Each wraps one of the core errors so the run page shows the message and the metadata (ids,
counts, amounts), never a stack trace of our internals and never a secret.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from batch_pipelines.core.errors import BatchPipelinesError


class BatchPipelinesFailure(dg.Failure):
    """Base of the failures this plugin raises in a run."""

    @classmethod
    def from_error(cls, error: BatchPipelinesError) -> BatchPipelinesFailure:
        return cls(description=error.message, metadata=_metadata(error.details))


class InvalidPartitionInput(BatchPipelinesFailure):
    """The upstream rows cannot become requests (missing columns, empty partition, bad ids)."""


class BudgetExceeded(BatchPipelinesFailure):
    """The estimated cost is above the workload's budget; nothing was sent."""


class ProviderFailure(BatchPipelinesFailure):
    """The provider refused or failed in a way retries could not fix."""


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
