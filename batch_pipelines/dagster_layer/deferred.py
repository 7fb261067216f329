"""The router in Dagster: a flush sensor, a completion sensor and the ``deferred_calls`` asset with its checks.

- ``deferred_flush_sensor`` (every minute): flushes the due groups of the buffer, runs the
  deadline watchdog over the deferred batches (cancel, and promote what cannot wait for the
  cancel), and observes the buffer's depth and oldest age on ``deferred_calls``.
- ``deferred_completion_sensor``: polls the deferred batches and requests a run of
  ``deferred_calls`` for an hour once every flush made in that hour has ended.
- ``deferred_calls``: partitioned by the hour the flushes were made (UTC). Its run collects the
  hour's flushes (one outcome per call, retries, salvage) and materializes the same proof as a
  workload's results: counts, tokens, cost, sync-equivalent cost, savings, promotions.
- checks ``success_rate_at_least`` and (with a budget) ``cost_within_budget``, per hour.

Hourly partitions rather than one per flush: flushes happen every few minutes under load, and
an hour is the unit people read a bill in; each flush stays its own ledger partition underneath.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import dagster as dg

from batch_pipelines.core.errors import BatchPipelinesError
from batch_pipelines.core.flush import FlushPolicy
from batch_pipelines.core.requests import Lane
from batch_pipelines.dagster_layer.checks import cost_budget_check, success_rate_check
from batch_pipelines.dagster_layer.errors import failure_for
from batch_pipelines.dagster_layer.report_metadata import results_metadata
from batch_pipelines.dagster_layer.resources import BatchGatewayResource

DEFERRED_CALLS_KEY = dg.AssetKey("deferred_calls")
HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"  # HourlyPartitionsDefinition's key format
BUFFER_DEPTH = "buffer_depth"
BUFFER_OLDEST_AGE_SECONDS = "buffer_oldest_age_seconds"
FLUSHES = "flushes"
DEADLINE_WARNINGS = "deadline_warnings"  # calls whose deadline even the sync lane could not meet
DEADLINE_WARNINGS_DETAIL = "deadline_warnings_detail"  # up to 50: call id -> the warning


@dataclass(frozen=True)
class DeferredRouterDefinitions:
    asset: dg.AssetsDefinition
    checks: tuple[dg.AssetChecksDefinition, ...]
    flush_sensor: dg.SensorDefinition
    completion_sensor: dg.SensorDefinition

    @property
    def sensors(self) -> list[dg.SensorDefinition]:
        return [self.flush_sensor, self.completion_sensor]

    def definitions(self) -> dg.Definitions:
        return dg.Definitions(assets=[self.asset], asset_checks=list(self.checks), sensors=self.sensors)


def deferred_router(
    *,
    start_date: str | datetime,
    min_success_rate: float = 0.9,
    budget_usd_per_hour: Decimal | float | str | None = None,
    flush_policy: FlushPolicy = FlushPolicy(),
    flush_interval_seconds: int = 60,
    completion_interval_seconds: int = 60,
) -> DeferredRouterDefinitions:
    """The router's Dagster definitions; ``start_date`` is the first hour of ``deferred_calls``."""
    # end_offset=1: the current hour is a partition too, so calls flushed this hour are shown as
    # soon as they end; a later flush in the same hour re-materializes it with every flush.
    hourly = dg.HourlyPartitionsDefinition(start_date=_start(start_date), timezone="UTC", end_offset=1)
    checks: list[dg.AssetChecksDefinition] = [success_rate_check(DEFERRED_CALLS_KEY, hourly, min_success_rate)]
    if budget_usd_per_hour is not None:
        checks.append(cost_budget_check(DEFERRED_CALLS_KEY, hourly, budget_usd_per_hour))
    return DeferredRouterDefinitions(
        asset=_deferred_calls_asset(hourly, flush_policy),
        checks=tuple(checks),
        flush_sensor=_flush_sensor(flush_policy, flush_interval_seconds),
        completion_sensor=_completion_sensor(hourly, flush_policy, completion_interval_seconds),
    )


def _start(value: str | datetime) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime(HOUR_KEY_FORMAT)
    return value


def hour_key(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0).strftime(HOUR_KEY_FORMAT)


def _deferred_calls_asset(hourly: dg.HourlyPartitionsDefinition, flush_policy: FlushPolicy) -> dg.AssetsDefinition:
    @dg.asset(
        key=DEFERRED_CALLS_KEY,
        partitions_def=hourly,
        output_required=False,
        kinds={"parquet"},
        description="Deferrable calls flushed in the hour: outcomes, tokens, cost and savings against the sync lane.",
    )
    def _deferred_calls(context: dg.AssetExecutionContext, batch_gateway: BatchGatewayResource) -> Iterator[Any]:
        window = context.partition_time_window
        router = batch_gateway.build_router(flush_policy)
        try:
            result = router.flusher.collect_window(window.start, window.end, window=context.partition_key)
        except BatchPipelinesError as exc:
            raise failure_for(exc) from None
        if result.report is None:
            # Batches or retries still running: the completion sensor asks again when they end.
            context.log.info(
                f"{len(result.unfinished)} of {len(result.flush_ids)} flushes of {context.partition_key} "
                "are not finished; not materializing yet"
            )
            return
        gateway = batch_gateway.gateway
        metadata = results_metadata(result.report, provider_of=lambda m: gateway.registry.provider_for(m).protocol)
        metadata[FLUSHES] = dg.MetadataValue.json(list(result.flush_ids))
        metadata[DEADLINE_WARNINGS] = len(result.deadline_warnings)
        if result.deadline_warnings:
            shown = dict(result.deadline_warnings[:50])
            metadata[DEADLINE_WARNINGS_DETAIL] = dg.MetadataValue.json(shown)
            context.log.warning(
                f"{len(result.deadline_warnings)} call(s) had deadlines even the sync lane could not meet"
            )
        yield dg.MaterializeResult(metadata=metadata)

    return _deferred_calls


def _flush_sensor(flush_policy: FlushPolicy, interval: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="deferred_flush_sensor",
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Flushes due groups of deferrable calls to their lane and watches their deadlines.",
    )
    def _sensor(context: dg.SensorEvaluationContext, batch_gateway: BatchGatewayResource) -> dg.SensorResult:
        router = batch_gateway.build_router(flush_policy)
        flushed = router.flush()
        watched = router.watch()
        depth, oldest = router.buffer.depth()
        now = router.flusher.now()
        lanes = flushed.by_lane()
        observation = dg.AssetObservation(
            asset_key=DEFERRED_CALLS_KEY,
            metadata={
                BUFFER_DEPTH: depth,
                BUFFER_OLDEST_AGE_SECONDS: (now - oldest).total_seconds() if oldest is not None else 0.0,
                "flushed_to_batch": lanes[Lane.BATCH],
                "flushed_to_sync": lanes[Lane.SYNC],
                "batches_cancelled_for_deadlines": len(watched.cancelled_batches),
                "calls_promoted_to_sync": watched.promoted_calls,
            },
        )
        for reason in flushed.reasons.values():
            context.log.info(reason)
        return dg.SensorResult(asset_events=[observation])

    return _sensor


def _completion_sensor(
    hourly: dg.HourlyPartitionsDefinition, flush_policy: FlushPolicy, interval: int
) -> dg.SensorDefinition:
    @dg.sensor(
        name="deferred_completion_sensor",
        minimum_interval_seconds=interval,
        asset_selection=[DEFERRED_CALLS_KEY],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests the deferred_calls run of an hour once every flush made in it has ended.",
    )
    def _sensor(context: dg.SensorEvaluationContext, batch_gateway: BatchGatewayResource) -> dg.SensorResult:
        router = batch_gateway.build_router(flush_policy)
        ready = router.flusher.ready_windows(hour_key)
        first = hourly.start.astimezone(UTC).strftime(HOUR_KEY_FORMAT)
        requests = [
            dg.RunRequest(
                run_key=f"deferred_calls:{window}:{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:16]}",
                partition_key=window,
                asset_selection=[DEFERRED_CALLS_KEY],
            )
            for window, parts in ready.items()
            if window >= first  # keys of one fixed format sort as times
        ]
        return dg.SensorResult(run_requests=requests, skip_reason=None if requests else "no hour of flushes has ended")

    return _sensor
