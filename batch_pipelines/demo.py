"""The main job, end to end on the bundled emulator: ``batch-pipelines demo`` (``make demo``).

It runs one partition of each of the four workloads through the real Dagster machinery: a
Dagster instance in a temporary directory, the input and submit assets materialized, the
completion sensors ticking until they request the results runs, the results assets with
their blocking checks and the downstream digest in those runs. Then it prints a table per
workload and exits non-zero unless every check passed.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg

from batch_pipelines.dagster_layer import metadata_keys as keys
from batch_pipelines.dagster_layer.factory import BatchWorkloadDefinitions
from batch_pipelines.dagster_layer.resources import BatchGatewayResource
from batch_pipelines.definitions import WORKLOADS, build_definitions
from batch_pipelines.demo_router import RouterOutcome, format_router_outcome, run_router_demo
from batch_pipelines.emulator.testing import run_emulator

DEMO_TIME_SCALE = 600.0  # ten virtual minutes per real second: batches end in well under a second
MAX_TICKS = 120
# Runs log at WARNING so the demo's own lines and tables stay readable.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class WorkloadOutcome:
    name: str
    partition: str
    metadata: dict[str, Any]
    checks_passed: bool
    check_notes: list[str]


def partition_for(workload_defs: BatchWorkloadDefinitions) -> str:
    partitions = workload_defs.workload.partitions_def
    if isinstance(partitions, dg.TimeWindowPartitionsDefinition):
        return (date.today() - timedelta(days=1)).isoformat()
    return partitions.get_partition_keys()[0]


def run_demo(
    work_dir: Path, *, echo: Callable[[str], None] = print, rows: int = 60
) -> tuple[list[WorkloadOutcome], RouterOutcome]:
    home = work_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    # The demo's instance is a sandbox: no telemetry prompt, no welcome dialog.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n", encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.local_temp(str(home))
    with run_emulator(profile="demo", state_dir=work_dir / "emulator", time_scale=DEMO_TIME_SCALE) as emulator:
        resource = BatchGatewayResource(
            emulator_url=emulator.base_url,
            ledger_url=f"sqlite:///{work_dir / 'ledger.sqlite'}",
            results_dir=str(work_dir / "results"),
            work_dir=str(work_dir / "work"),
        )
        defs = build_definitions(resource)
        outcomes = [_run_workload(defs, w, instance, resource, echo, rows) for w in WORKLOADS]
        router = run_router_demo(emulator.base_url, work_dir, echo=echo)
    instance.dispose()
    return outcomes, router


def _run_workload(
    defs: dg.Definitions,
    wdefs: BatchWorkloadDefinitions,
    instance: dg.DagsterInstance,
    resource: BatchGatewayResource,
    echo: Callable[[str], None],
    rows: int,
) -> WorkloadOutcome:
    workload = wdefs.workload
    partition = partition_for(wdefs)
    echo(f"[{workload.name}] partition {partition}: materializing input and submit assets")
    # Definitions also admits cacheable (deferred) assets, which materialize() cannot take; we define none.
    all_assets = [
        asset
        for asset in [*(defs.assets or []), *(defs.asset_checks or [])]
        if isinstance(asset, (dg.AssetsDefinition, dg.AssetSpec, dg.SourceAsset))
    ]
    submitted = dg.materialize(
        all_assets,
        selection=[workload.upstream_key, workload.submit_key],
        partition_key=partition,
        instance=instance,
        resources={"batch_gateway": resource},
        run_config={**QUIET, "ops": {workload.upstream_key.to_python_identifier(): {"config": {"rows": rows}}}},
    )
    assert submitted.success
    check_notes: list[str] = []
    passed = True
    for tick in range(MAX_TICKS):
        with dg.build_sensor_context(
            instance=instance, definitions=defs, sensor_name=wdefs.sensor.name, resources={"batch_gateway": resource}
        ) as context:
            result = wdefs.sensor(context)
        # The completion sensors always return a SensorResult (cursor, events and run requests).
        assert isinstance(result, dg.SensorResult)
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
        if not result.run_requests:
            time.sleep(0.25)  # the emulator's clock runs at DEMO_TIME_SCALE; give it a moment
            continue
        for request in result.run_requests:
            echo(f"[{workload.name}] sensor tick {tick}: batches ended, running {request.run_key}")
            run = dg.materialize(
                all_assets,
                selection=request.asset_selection,
                partition_key=request.partition_key,
                instance=instance,
                resources={"batch_gateway": resource},
                tags=request.tags,
                run_config=QUIET,
                raise_on_error=False,
            )
            for evaluation in run.get_asset_check_evaluations():
                ok = evaluation.passed
                passed &= ok
                check_notes.append(
                    f"{evaluation.check_name}: {'passed' if ok else 'FAILED'} — {evaluation.description}"
                )
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=workload.results_key, asset_partitions=[partition]), limit=1
        ).records
        materialization = records[0].asset_materialization if records else None
        if materialization is not None:
            metadata = {k: v.value for k, v in materialization.metadata.items()}
            return WorkloadOutcome(workload.name, partition, metadata, passed and bool(check_notes), check_notes)
    return WorkloadOutcome(workload.name, partition, {}, False, ["results never materialized"])


def format_outcome(outcome: WorkloadOutcome) -> str:
    m = outcome.metadata
    tokens_in = sum(v for k, v in m.items() if k.endswith(".prompt_tokens"))
    tokens_cached = sum(v for k, v in m.items() if k.endswith(".cached_tokens"))
    tokens_out = sum(v for k, v in m.items() if k.endswith(".completion_tokens"))
    cost = Decimal(str(m.get(keys.COST_USD_EXACT, 0)))
    sync = Decimal(str(m.get(keys.SYNC_EQUIVALENT_USD, 0)))
    rows = [
        ("items", f"{m.get(keys.ITEMS_TOTAL, 0)}"),
        ("succeeded", f"{m.get(keys.outcome_count('succeeded'), 0)}"),
        ("failed", f"{m.get(keys.ITEMS_TOTAL, 0) - m.get(keys.outcome_count('succeeded'), 0)}"),
        ("retried (sync lane or new batch)", f"{m.get(keys.RETRIED_ITEMS, 0)}"),
        ("tokens in / cached / out", f"{tokens_in:,} / {tokens_cached:,} / {tokens_out:,}"),
        ("batch cost", f"${cost:.6f}"),
        ("sync-equivalent cost", f"${sync:.6f}"),
        ("savings", f"${Decimal(str(m.get(keys.SAVINGS_USD, 0))):.6f} ({m.get(keys.SAVINGS_PCT, 0):.1f}%)"),
        ("checks", "all passed" if outcome.checks_passed else "FAILED"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{outcome.name} (partition {outcome.partition})", "-" * (width + 24)]
    lines += [f"{label:<{width}}  {value:>20}" for label, value in rows]
    lines += [f"  {note}" for note in outcome.check_notes]
    return "\n".join(lines)


def main(keep: Path | None = None, echo: Callable[[str], None] = print) -> int:
    with tempfile.TemporaryDirectory(prefix="batch-pipelines-demo-") as tmp:
        work_dir = keep or Path(tmp)
        work_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        outcomes, router = run_demo(work_dir, echo=echo)
        echo("")
        for outcome in outcomes:
            echo(format_outcome(outcome))
            echo("")
        echo(format_router_outcome(router))
        echo("")
        ok = all(o.checks_passed for o in outcomes) and router.ok
        echo(
            f"demo {'passed' if ok else 'FAILED'}: {len(outcomes)} workloads and the router "
            f"in {time.monotonic() - started:.1f} s"
        )
        return 0 if ok else 1
