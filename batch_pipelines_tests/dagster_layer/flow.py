"""Helpers to drive the real Dagster machinery in tests: materialize, tick a sensor, run its requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg


@dataclass
class FlowResult:
    run_requests: list[dg.RunRequest] = field(default_factory=list)
    runs: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    observations: list[dg.AssetObservation] = field(default_factory=list)


def all_assets(defs: dg.Definitions) -> list[Any]:
    return [*(defs.assets or []), *(defs.asset_checks or [])]


def materialize(
    defs: dg.Definitions,
    instance,
    selection,
    partition: str,
    resources,
    *,
    rows: int | None = None,
    upstream=None,
    raise_on_error=True,
):
    run_config = None
    if rows is not None and upstream is not None:
        run_config = {"ops": {upstream.to_python_identifier(): {"config": {"rows": rows}}}}
    return dg.materialize(
        all_assets(defs),
        selection=selection,
        partition_key=partition,
        instance=instance,
        resources=resources,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def tick(defs: dg.Definitions, sensor: dg.SensorDefinition, instance) -> dg.SensorResult:
    resources = defs.resources
    with dg.build_sensor_context(
        instance=instance, definitions=defs, sensor_name=sensor.name, resources=resources
    ) as context:
        result = sensor(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def run_requests_of(defs, instance, request: dg.RunRequest, resources) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        all_assets(defs),
        selection=request.asset_selection,
        partition_key=request.partition_key,
        instance=instance,
        resources=resources,
        tags=request.tags,
        raise_on_error=False,
    )


def latest_metadata(instance, asset_key: dg.AssetKey, partition: str) -> dict[str, Any] | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
