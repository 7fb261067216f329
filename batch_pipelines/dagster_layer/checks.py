"""Check factories over the results asset's metadata (cf. Dagster's metadata bounds checks).

Each factory validates its arguments when the definitions load, reads one metadata key of the
partition's latest materialization, and returns pass/fail with the evidence. Both checks are
blocking at ERROR severity: a partition that breaks them stops its downstream assets in the run.
"""

import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import dagster as dg

from batch_pipelines.dagster_layer import metadata_keys as keys


def _partitioned_check(**kwargs: Any) -> Callable[[Callable[..., Any]], dg.AssetChecksDefinition]:
    """``dg.asset_check`` with the asset's partitions: one result per partition in the UI.

    Partitioned checks are marked preview in Dagster 1.13 (a PreviewWarning at every load); we
    rely on them deliberately and keep the warning out of users' logs.
    """

    def decorate(fn: Callable[..., Any]) -> dg.AssetChecksDefinition:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=dg.PreviewWarning)
            return dg.asset_check(**kwargs)(fn)

    return decorate


def _with_reason_in_the_failure(result: dg.AssetCheckResult, check_name: str) -> Iterator[dg.AssetCheckResult]:
    """Record ``result``; when it failed, fail the step with its reason.

    Dagster's own failure for a blocking check names only the check ("1 blocking asset check
    failed"); raising after the result is recorded puts the evidence (the value against the
    limit) in the run failure a person reads first. Downstream steps are skipped either way.
    """
    yield result
    if not result.passed:
        raise dg.Failure(
            description=f"{check_name} failed for partition: {result.description}",
            metadata=dict(result.metadata or {}),
            allow_retries=False,
        )


def _partition_metadata(context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey) -> dict[str, Any] | None:
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records:
        return None
    materialization = records[0].asset_materialization
    return {k: v.value for k, v in (materialization.metadata if materialization else {}).items()}


def success_rate_check(
    asset_key: dg.AssetKey, partitions_def: dg.PartitionsDefinition, min_success_rate: float
) -> dg.AssetChecksDefinition:
    """Passes when the partition's share of succeeded items is at least ``min_success_rate``."""
    if not isinstance(min_success_rate, (int, float)) or not 0.0 <= min_success_rate <= 1.0:
        raise dg.DagsterInvalidDefinitionError(f"min_success_rate must be a number in [0, 1], got {min_success_rate!r}")

    @_partitioned_check(
        asset=asset_key,
        name="success_rate_at_least",
        blocking=True,
        partitions_def=partitions_def,
        description=f"At least {min_success_rate:.1%} of the partition's items succeeded.",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        metadata = _partition_metadata(context, asset_key)
        if metadata is None or keys.SUCCESS_RATE not in metadata:
            result = dg.AssetCheckResult(
                passed=False, description=f"no {keys.SUCCESS_RATE} recorded for this partition"
            )
        else:
            rate = float(metadata[keys.SUCCESS_RATE])
            result = dg.AssetCheckResult(
                passed=rate >= min_success_rate,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={keys.SUCCESS_RATE: rate, "min_success_rate": min_success_rate},
                description=f"success rate {rate:.2%} vs minimum {min_success_rate:.2%}",
            )
        yield from _with_reason_in_the_failure(result, "success_rate_at_least")

    return _check


def cost_budget_check(
    asset_key: dg.AssetKey, partitions_def: dg.PartitionsDefinition, budget_usd: Decimal | float | str
) -> dg.AssetChecksDefinition:
    """Passes when the partition's recorded cost is within ``budget_usd``."""
    try:
        budget = Decimal(str(budget_usd))
    except Exception:
        raise dg.DagsterInvalidDefinitionError(f"budget_usd must be a number, got {budget_usd!r}") from None
    if not budget.is_finite() or budget < 0:
        raise dg.DagsterInvalidDefinitionError(f"budget_usd must be a finite, non-negative amount, got {budget_usd!r}")

    @_partitioned_check(
        asset=asset_key,
        name="cost_within_budget",
        blocking=True,
        partitions_def=partitions_def,
        description=f"The partition cost at most ${budget} (every attempt counted, duplicates included).",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        metadata = _partition_metadata(context, asset_key)
        if metadata is None or keys.COST_USD not in metadata:
            result = dg.AssetCheckResult(passed=False, description=f"no {keys.COST_USD} recorded for this partition")
        else:
            # The exact amount travels as a string beside the plotted float; compare exactly.
            cost = Decimal(str(metadata.get(keys.COST_USD_EXACT, metadata[keys.COST_USD])))
            result = dg.AssetCheckResult(
                passed=cost <= budget,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={keys.COST_USD: float(cost), "budget_usd": float(budget)},
                description=f"cost ${cost:.6f} vs budget ${budget}",
            )
        yield from _with_reason_in_the_failure(result, "cost_within_budget")

    return _check
