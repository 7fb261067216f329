"""The Dagster layer: the only code that imports dagster. It turns the services' return values
into materializations, observations, check results and run requests, and nothing more.

The public surface for users' own workloads (README: "Add your own workload") is ``__all__``.
"""

from batch_pipelines.dagster_layer.checks import cost_budget_check, success_rate_check
from batch_pipelines.dagster_layer.factory import BatchWorkloadDefinitions, batch_workload
from batch_pipelines.dagster_layer.resources import BatchGatewayResource, LanePolicyConfig
from batch_pipelines.dagster_layer.workload import BatchWorkload, InvalidOutput

__all__ = [
    "BatchGatewayResource",
    "BatchWorkload",
    "BatchWorkloadDefinitions",
    "InvalidOutput",
    "LanePolicyConfig",
    "batch_workload",
    "cost_budget_check",
    "success_rate_check",
]
