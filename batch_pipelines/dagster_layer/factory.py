"""``batch_workload``: a workload description in, Dagster definitions out.

For a workload named ``w`` it builds, all on the workload's partitions:
- ``w_batch``: the submit asset (validate rows, estimate, refuse over budget, submit idempotently);
- ``w_results``: the results asset (collect, retry, write Parquet, materialize the proof);
- the success-rate and cost-budget checks on ``w_results`` (blocking, ERROR);
- ``w_completion_sensor``: polls open batches, observes progress, requests the results run;
- ``w_deadline_sensor``: cancels or promotes to the sync lane what would miss its deadline.
"""

import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pandas as pd

from batch_pipelines.core.errors import BatchPipelinesError
from batch_pipelines.dagster_layer import metadata_keys as keys
from batch_pipelines.dagster_layer.checks import cost_budget_check, success_rate_check
from batch_pipelines.dagster_layer.errors import failure_for
from batch_pipelines.dagster_layer.report_metadata import failure_reasons, results_metadata, table_metadata
from batch_pipelines.dagster_layer.resources import BatchGatewayResource
from batch_pipelines.dagster_layer.results_io import BatchResultsIOManager
from batch_pipelines.dagster_layer.workload import BatchWorkload

PROMOTE_TAG = "batch_pipelines/promote"
SENSOR_TIME_BUDGET_S = 40.0  # well inside Dagster's 60 s sensor limit
SENSOR_INTERVAL_ENV = "BATCH_PIPELINES_SENSOR_INTERVAL_SECONDS"
DEFAULT_SENSOR_INTERVAL_S = 30


@dataclass(frozen=True)
class BatchWorkloadDefinitions:
    workload: BatchWorkload
    submit_asset: dg.AssetsDefinition
    results_asset: dg.AssetsDefinition
    checks: tuple[dg.AssetChecksDefinition, ...]
    sensor: dg.SensorDefinition
    deadline_sensor: dg.SensorDefinition

    @property
    def assets(self) -> list[dg.AssetsDefinition]:
        return [self.submit_asset, self.results_asset]

    @property
    def sensors(self) -> list[dg.SensorDefinition]:
        return [self.sensor, self.deadline_sensor]

    def definitions(self) -> dg.Definitions:
        return dg.Definitions(assets=self.assets, asset_checks=list(self.checks), sensors=self.sensors)


def batch_workload(workload: BatchWorkload, *, sensor_interval_seconds: int | None = None) -> BatchWorkloadDefinitions:
    """The workload's definitions; the sensors' interval defaults to $BATCH_PIPELINES_SENSOR_INTERVAL_SECONDS, else
    30 s."""
    if sensor_interval_seconds is None:
        sensor_interval_seconds = sensor_interval_from_env()
    submit_asset = _submit_asset(workload)
    results_asset = _results_asset(workload)
    checks: list[dg.AssetChecksDefinition] = [
        success_rate_check(workload.results_key, workload.partitions_def, workload.min_success_rate)
    ]
    if workload.budget_usd is not None:
        checks.append(cost_budget_check(workload.results_key, workload.partitions_def, workload.budget_usd))
    sensor = completion_sensor(workload, minimum_interval_seconds=sensor_interval_seconds)
    watchdog = deadline_sensor(workload, minimum_interval_seconds=sensor_interval_seconds)
    return BatchWorkloadDefinitions(workload, submit_asset, results_asset, tuple(checks), sensor, watchdog)


def sensor_interval_from_env() -> int:
    """The sensors' minimum interval: tests and demos set it low, since batches there end in seconds."""
    raw = os.environ.get(SENSOR_INTERVAL_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_SENSOR_INTERVAL_S
    value = int(raw) if raw.strip().isdigit() else 0
    if value < 1:
        raise dg.DagsterInvalidDefinitionError(
            f"{SENSOR_INTERVAL_ENV} must be a whole number of seconds >= 1, got {raw!r}"
        )
    return value


def _described(workload: BatchWorkload, what_it_does: str) -> str:
    """The workload's own description first (it says what the data is for), then what the asset does."""
    return f"{workload.description}\n\n{what_it_does}" if workload.description else what_it_does


def _submit_asset(workload: BatchWorkload) -> dg.AssetsDefinition:
    @dg.asset(
        key=workload.submit_key,
        ins={"rows": dg.AssetIn(workload.upstream_key)},
        partitions_def=workload.partitions_def,
        group_name=workload.group_name,
        kinds={workload.provider_kind, "batch"},
        description=_described(workload, f"Submits {workload.name} to the batch lane ({workload.model})."),
        owners=list(workload.owners),
        tags=dict(workload.tags),
        code_version=workload.resolved_code_version,
        retry_policy=workload.submit_retry_policy,
    )
    def _submit(
        context: dg.AssetExecutionContext, batch_gateway: BatchGatewayResource, rows: pd.DataFrame
    ) -> dg.MaterializeResult[Any]:
        partition = context.partition_key
        try:
            requests = workload.request_stream(rows, partition=partition)
            report = batch_gateway.gateway.submit(
                workload.name,
                partition,
                requests,
                budget_usd=workload.budget_usd,
                expected_output_tokens=workload.expected_output_tokens,
            )
        except BatchPipelinesError as exc:
            raise failure_for(exc) from None
        estimate = report.estimate
        context.log.info(f"{report.items} items in {len(report.batches)} batch(es); estimate ${estimate.cost_usd:.4f}")
        return dg.MaterializeResult(
            metadata={
                keys.ITEM_COUNT: report.items,
                keys.BATCH_IDS: dg.MetadataValue.json([b.vendor_batch_id for b in report.batches]),
                keys.ESTIMATED_INPUT_TOKENS: estimate.input_tokens,
                keys.ESTIMATED_COST_USD: float(estimate.cost_usd),
                keys.ESTIMATED_SYNC_EQUIVALENT_USD: float(estimate.sync_equivalent_usd),
            }
        )

    return _submit


def _results_asset(workload: BatchWorkload) -> dg.AssetsDefinition:
    # `io_manager_def` is marked beta in Dagster 1.13 (a BetaWarning at every load); we rely on it
    # deliberately (no resource key for users to wire) and keep the warning out of their logs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=dg.BetaWarning)
        return _define_results_asset(workload)


def _define_results_asset(workload: BatchWorkload) -> dg.AssetsDefinition:
    @dg.asset(
        key=workload.results_key,
        ins={"rows": dg.AssetIn(workload.upstream_key)},
        deps=[workload.submit_key],
        partitions_def=workload.partitions_def,
        group_name=workload.group_name,
        kinds={workload.provider_kind, "parquet"},
        output_required=False,
        io_manager_def=BatchResultsIOManager(),  # downstream assets take the results as a DataFrame
        description=_described(workload, f"Results of {workload.name}: one row per input item, with cost and savings."),
        owners=list(workload.owners),
        tags=dict(workload.tags),
        code_version=workload.resolved_code_version,
    )
    def _results(
        context: dg.AssetExecutionContext, batch_gateway: BatchGatewayResource, rows: pd.DataFrame
    ) -> Iterator[Any]:
        partition = context.partition_key
        gateway = batch_gateway.gateway

        def rebuild(custom_ids: Sequence[str]) -> list[Any]:
            wanted = set(custom_ids)
            return [r for r in workload.requests_from_frame(rows, partition=partition) if r.custom_id in wanted]

        try:
            if context.run.tags.get(PROMOTE_TAG) == "now":
                promoted = gateway.promote(
                    workload.name,
                    partition,
                    rebuild_requests=rebuild,
                    parse_response=workload.parse_response,
                    vector_column=workload.vector_column,
                )
                context.log.warning(
                    f"deadline at risk: {promoted} item(s) promoted to the sync lane while their batch runs on"
                )
            report = gateway.reconcile(
                workload.name,
                partition,
                parse_response=workload.parse_response,
                rebuild_requests=rebuild,
                vector_column=workload.vector_column,
                worker=context.run.run_id,
            )
        except BatchPipelinesError as exc:
            raise failure_for(exc) from None
        if not report.complete:
            # Retries went out as a new batch: the sensor requests this asset again when it ends.
            context.log.info(
                f"{report.resubmitted} item(s) resubmitted in {list(report.new_batch_ids)}; not materializing yet"
            )
            return
        reasons = failure_reasons(report.results_path) if report.results_path is not None else []
        metadata = results_metadata(
            report, provider_of=lambda model: gateway.registry.provider_for(model).protocol, failure_reasons=reasons
        )
        if report.results_path is not None:
            metadata.update(table_metadata(report.results_path))
        if workload.summarize is not None and report.results_path is not None:
            metadata.update(workload.summarize(pd.read_parquet(report.results_path)))
        yield dg.MaterializeResult(metadata=metadata)

    return _results


def completion_sensor(workload: BatchWorkload, *, minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    """Polls the workload's open batches; requests the results run once a partition's batches all ended."""

    @dg.sensor(
        name=f"{workload.name}_completion_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        asset_selection=[workload.results_key, *workload.downstream],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Watches {workload.name}'s batches and collects their results when they end.",
    )
    def _sensor(context: dg.SensorEvaluationContext, batch_gateway: BatchGatewayResource) -> dg.SensorResult:
        report = batch_gateway.gateway.poll(workload.name, time_budget_s=SENSOR_TIME_BUDGET_S)
        observations = []
        run_requests = []
        for partition, progress in sorted(report.partitions.items()):
            observations.append(
                dg.AssetObservation(
                    asset_key=workload.submit_key,
                    partition=partition,
                    metadata={
                        keys.BATCH_STATUS: progress.status_summary,
                        keys.PROGRESS_COMPLETED: progress.completed,
                        keys.PROGRESS_FAILED: progress.failed,
                        keys.PROGRESS_TOTAL: progress.total,
                    },
                )
            )
            if progress.ready_for_results:
                run_requests.append(
                    dg.RunRequest(
                        # Once per set of ended batches: a retry batch gives a new key, a repeat tick none.
                        run_key=_run_key(workload.name, partition, _run_key_parts(progress)),
                        partition_key=partition,
                        asset_selection=[workload.results_key, *workload.downstream],
                        tags={"batch_pipelines/workload": workload.name},
                    )
                )
        skip = None if run_requests or observations else "no open batches"
        return dg.SensorResult(run_requests=run_requests, asset_events=observations, skip_reason=skip)

    return _sensor


def deadline_sensor(workload: BatchWorkload, *, minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    """The deadline watchdog: cancels batches that would finish too late and promotes their items.

    Cancelling lets the partial output be salvaged (the completion sensor then collects it and
    the retry policy sends the rest to the sync lane, the deadline being near). When there is no
    time to wait for the cancellation, it requests a results run that runs the items on the sync
    lane at once while the batch goes on.
    """

    @dg.sensor(
        name=f"{workload.name}_deadline_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        asset_selection=[workload.results_key, *workload.downstream],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Promotes {workload.name}'s items to the sync lane when a batch would miss their deadline.",
    )
    def _sensor(context: dg.SensorEvaluationContext, batch_gateway: BatchGatewayResource) -> dg.SensorResult:
        actions = batch_gateway.gateway.watch_deadlines(workload.name)
        observations = [
            dg.AssetObservation(
                asset_key=workload.submit_key,
                partition=action.partition,
                metadata={
                    "deadline_at_risk": action.deadline.isoformat(),
                    "items_waiting": action.remaining,
                    "cancel_requested": dg.MetadataValue.json(list(action.cancel_requested)),
                    "promoted_now": action.run_on_sync_now,
                },
            )
            for action in actions
        ]
        run_requests = [
            dg.RunRequest(
                run_key=_run_key(workload.name, action.partition, ["promote", *action.open_batch_ids]),
                partition_key=action.partition,
                asset_selection=[workload.results_key, *workload.downstream],
                tags={"batch_pipelines/workload": workload.name, PROMOTE_TAG: "now"},
            )
            for action in actions
            if action.run_on_sync_now
        ]
        return dg.SensorResult(
            run_requests=run_requests, asset_events=observations, skip_reason=None if actions else "no deadline at risk"
        )

    return _sensor


def _run_key_parts(progress: Any) -> list[str]:
    """What makes a results run new: the batches it collects, or (for stranded items) the hour.

    Stranded items (a results run died after collecting) get at most one new run an hour, so a
    run that keeps dying does not loop, yet the partition is never left unfinished for good.
    """
    parts = list(progress.unreconciled_ids)
    if progress.stranded:
        parts.append(f"stranded:{datetime.now(UTC):%Y%m%d%H}")
    return parts


def _run_key(job: str, partition: str, batch_ids: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(batch_ids)).encode()).hexdigest()[:16]
    return f"{job}:{partition}:{digest}"
