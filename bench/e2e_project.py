"""One partition of a workload through real Dagster: the end-to-end benchmark's project side.

A Dagster instance in the work directory; the input and submit assets materialized in one run;
the emulator's clock moved past the batches' end; one completion-sensor tick; the results run
it requests materialized (checks included). Phases are timed from the run's step events, so a
phase is the asset's own work and the wall is everything the user waits for, Dagster included.

    python -m bench.e2e_project --workload classification --items N --emulator-url URL --work-dir DIR

Prints one JSON line: the phases' seconds, the counts, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import httpx

from batch_pipelines.dagster_layer import metadata_keys as keys
from batch_pipelines.dagster_layer.factory import batch_workload
from batch_pipelines.dagster_layer.resources import BatchGatewayResource
from batch_pipelines.workloads import classification, embedding_backfill

WORKLOADS = {
    "classification": (classification.support_tickets, classification.workload, "2026-11-26"),
    "embedding_backfill": (embedding_backfill.corpus_chunks, embedding_backfill.workload, "shard-000"),
}
# The shipped workloads' budgets are sized for the demo's 60 rows; a benchmark partition is
# thousands of times larger, so the budget check would (rightly) refuse it.
BENCH_BUDGET_USD = Decimal(100_000)
MAX_TICKS = 200  # a tick whose list call finds batches still being worked on requests nothing yet
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Each step's duration, from its STEP_START and STEP_SUCCESS (or FAILURE) events."""
    starts: dict[str, float] = {}
    durations: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or record.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[record.step_key] = record.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            durations[record.step_key] = record.timestamp - starts.get(record.step_key, record.timestamp)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="classification")
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--emulator-url", required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args()
    upstream, shipped, partition = WORKLOADS[args.workload]
    workload = dataclasses.replace(shipped, budget_usd=BENCH_BUDGET_USD)
    wdefs = batch_workload(workload, sensor_interval_seconds=30)
    home = args.work_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    resource_ = BatchGatewayResource(
        emulator_url=args.emulator_url,
        ledger_url=f"sqlite:///{args.work_dir / 'ledger.sqlite'}",
        results_dir=str(args.work_dir / "results"),
        work_dir=str(args.work_dir / "work"),
    )
    defs = dg.Definitions(
        assets=[upstream, *wdefs.assets],
        asset_checks=list(wdefs.checks),
        sensors=wdefs.sensors,
        resources={"batch_gateway": resource_},
    )
    all_assets = [upstream, *wdefs.assets, *wdefs.checks]

    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        submitted = dg.materialize(
            all_assets,
            selection=[workload.upstream_key, workload.submit_key],
            partition_key=partition,
            instance=instance,
            resources={"batch_gateway": resource_},
            run_config={
                **QUIET,
                "ops": {workload.upstream_key.to_python_identifier(): {"config": {"rows": args.items}}},
            },
        )
        submit_steps = step_seconds(instance, submitted.run_id)
        submit_done = time.perf_counter()
        httpx.post(args.emulator_url + "/_emulator/clock/advance", json={"seconds": 3600}, timeout=60)
        request = None
        ticks = 0
        while request is None and ticks < MAX_TICKS:
            ticks += 1
            with dg.build_sensor_context(
                instance=instance,
                definitions=defs,
                sensor_name=wdefs.sensor.name,
                resources={"batch_gateway": resource_},
            ) as context:
                result = wdefs.sensor(context)
            request = result.run_requests[0] if result.run_requests else None
        if request is None:
            raise SystemExit(f"the completion sensor requested no results run in {MAX_TICKS} ticks")
        sensor_done = time.perf_counter()
        run = dg.materialize(
            all_assets,
            selection=request.asset_selection,
            partition_key=request.partition_key,
            instance=instance,
            resources={"batch_gateway": resource_},
            tags=request.tags,
            run_config=QUIET,
            raise_on_error=False,
        )
        results_done = time.perf_counter()
        results_steps = step_seconds(instance, run.run_id)
        metadata = {
            k: v.value
            for k, v in instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=workload.results_key, asset_partitions=[partition]), limit=1
            )
            .records[0]
            .asset_materialization.metadata.items()
        }
    checks_passed = all(e.passed for e in run.get_asset_check_evaluations())
    print(
        json.dumps(
            {
                "input_s": submit_steps.get(workload.upstream_key.to_python_identifier(), 0.0),
                "submit_s": submit_steps.get(workload.submit_key.to_python_identifier(), 0.0),
                "submit_run_s": submit_done - started,
                "wait_s": sensor_done - submit_done,
                "ticks": ticks,
                "results_s": results_steps.get(workload.results_key.to_python_identifier(), 0.0),
                "results_run_s": results_done - sensor_done,
                "wall_s": results_done - started,
                "rows": metadata.get(keys.ITEMS_TOTAL, 0),
                "succeeded": metadata.get(keys.outcome_count("succeeded"), 0),
                "checks_passed": checks_passed,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
