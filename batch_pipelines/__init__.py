"""batch_pipelines: run LLM work in Dagster on the cheapest lane that still meets its deadline.

This module is the one public surface: what ``__all__`` lists is supported, everything else may
change. It holds the Dagster API (the gateway resource, the workload factory, its checks and
failures), the call-site router, and the core values (requests, usage, outcomes, prices, errors).

The Dagster and router names are loaded on first use (PEP 562 ``__getattr__``), so importing a
core value, or running the emulator or the ``cost`` command, imports neither Dagster nor the
ledger's SQLAlchemy stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batch_pipelines.core.batches import BatchError, BatchInfo
from batch_pipelines.core.errors import (
    BatchPipelinesError,
    BudgetExceededError,
    ConfigError,
    InvalidInputError,
    InvalidOutput,
    LedgerError,
    MalformedResponseError,
    ProviderError,
    QueueFullError,
    UnknownModelError,
    WorkloadError,
)
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.pricing import CostBreakdown, Discounts, ModelPrice, PriceBook, Rates
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.core.status import TERMINAL_STATUSES, BatchStatus
from batch_pipelines.core.usage import Usage

if TYPE_CHECKING:
    from batch_pipelines.dagster_layer.checks import cost_budget_check, success_rate_check
    from batch_pipelines.dagster_layer.deferred import DeferredRouterDefinitions, deferred_router
    from batch_pipelines.dagster_layer.errors import (
        BatchPipelinesFailure,
        BudgetExceeded,
        ConfigurationFailure,
        InvalidPartitionInput,
        LedgerFailure,
        ProviderFailure,
        WorkloadFailure,
    )
    from batch_pipelines.dagster_layer.factory import BatchWorkloadDefinitions, batch_workload
    from batch_pipelines.dagster_layer.invoice import daily_invoice_asset
    from batch_pipelines.dagster_layer.resources import BatchGatewayResource, LanePolicyConfig
    from batch_pipelines.dagster_layer.workload import BatchWorkload
    from batch_pipelines.services.router import CallResult, DeferredCall, Router

# Public name -> the module that defines it, imported on first use.
_LAZY_NAMES = {
    "CallResult": "batch_pipelines.services.router",
    "DeferredCall": "batch_pipelines.services.router",
    "Router": "batch_pipelines.services.router",
    "BatchGatewayResource": "batch_pipelines.dagster_layer.resources",
    "LanePolicyConfig": "batch_pipelines.dagster_layer.resources",
    "BatchWorkload": "batch_pipelines.dagster_layer.workload",
    "BatchWorkloadDefinitions": "batch_pipelines.dagster_layer.factory",
    "batch_workload": "batch_pipelines.dagster_layer.factory",
    "DeferredRouterDefinitions": "batch_pipelines.dagster_layer.deferred",
    "deferred_router": "batch_pipelines.dagster_layer.deferred",
    "cost_budget_check": "batch_pipelines.dagster_layer.checks",
    "daily_invoice_asset": "batch_pipelines.dagster_layer.invoice",
    "success_rate_check": "batch_pipelines.dagster_layer.checks",
    "BatchPipelinesFailure": "batch_pipelines.dagster_layer.errors",
    "BudgetExceeded": "batch_pipelines.dagster_layer.errors",
    "ConfigurationFailure": "batch_pipelines.dagster_layer.errors",
    "InvalidPartitionInput": "batch_pipelines.dagster_layer.errors",
    "LedgerFailure": "batch_pipelines.dagster_layer.errors",
    "ProviderFailure": "batch_pipelines.dagster_layer.errors",
    "WorkloadFailure": "batch_pipelines.dagster_layer.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'batch_pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})


__all__ = [
    # Dagster API
    "BatchGatewayResource",
    "BatchPipelinesFailure",
    "BatchWorkload",
    "BatchWorkloadDefinitions",
    "BudgetExceeded",
    "ConfigurationFailure",
    "InvalidOutput",
    "InvalidPartitionInput",
    "LanePolicyConfig",
    "LedgerFailure",
    "ProviderFailure",
    "WorkloadFailure",
    "batch_workload",
    "DeferredRouterDefinitions",
    "deferred_router",
    "cost_budget_check",
    "success_rate_check",
    "daily_invoice_asset",
    # Call-site router (plain Python, no Dagster)
    "CallResult",
    "DeferredCall",
    "Router",
    # Core values and errors
    "BatchError",
    "BatchInfo",
    "BatchPipelinesError",
    "BatchStatus",
    "BudgetExceededError",
    "ConfigError",
    "CostBreakdown",
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
    "TERMINAL_STATUSES",
    "UnknownModelError",
    "Usage",
    "WorkloadError",
]
