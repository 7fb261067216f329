"""Everything, wired: the four workloads, their sensors and checks, a nightly schedule, the resource.

This is the project's own code location and it runs on the bundled emulator, named explicitly:
the resource reads the emulator's URL from $BATCH_PIPELINES_EMULATOR_URL when a run starts.
``make dev`` (``batch-pipelines dev``) starts the emulator and sets it; with
``dagster dev -m batch_pipelines.definitions`` set it yourself (e.g. to http://127.0.0.1:8765 after
``make emulator``). Your own code location points the resource at real vendors with a providers
file instead (README: "Configure a real provider").
"""

import dagster as dg

from batch_pipelines.dagster_layer.deferred import deferred_router
from batch_pipelines.dagster_layer.invoice import daily_invoice_asset
from batch_pipelines.dagster_layer.resources import BatchGatewayResource
from batch_pipelines.emulator import EMULATOR_URL_ENV
from batch_pipelines.workloads import classification, embedding_backfill, evals, nightly_reports

WORKLOADS = (nightly_reports.defs, classification.defs, embedding_backfill.defs, evals.defs)

# The daily workloads' inputs and submit assets, every night at 01:00 for the day before (the job's
# daily partitions are inferred from the selected assets; the schedule requests one per night).
nightly_submit_job = dg.define_asset_job(
    "nightly_submit",
    selection=dg.AssetSelection.assets(
        nightly_reports.team_activity,
        nightly_reports.workload.submit_key,
        classification.support_tickets,
        classification.workload.submit_key,
        evals.eval_cases,
        evals.workload.submit_key,
    ),
)
# Off by default, unlike the sensors: the sensors only collect what was already bought, the
# schedule spends money every night, so starting it is a choice (README: "Turn on the schedule").
nightly_schedule = dg.build_schedule_from_partitioned_job(
    nightly_submit_job, hour_of_day=1, minute_of_hour=0, default_status=dg.DefaultScheduleStatus.STOPPED
)

# The call-site router's flush and completion sensors and its hourly deferred_calls asset.
ROUTER = deferred_router(start_date="2026-01-01-00:00", budget_usd_per_hour="5.00")

# The day's spend from the ledger, downstream of the daily workloads' results and of the router's
# hourly deferred_calls (a day depends on its 24 hours). The embedding backfill is partitioned by
# shard, not by day: its spend is in the invoice, not in the lineage.
daily_invoice = daily_invoice_asset(
    start_date="2026-01-01",
    deps=[
        *(w.workload.results_key for w in (nightly_reports.defs, classification.defs, evals.defs)),
        ROUTER.asset.key,
    ],
)


def build_definitions(resource: BatchGatewayResource | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            nightly_reports.team_activity,
            nightly_reports.daily_reports_digest,
            classification.support_tickets,
            embedding_backfill.corpus_chunks,
            evals.eval_cases,
            *(asset for w in WORKLOADS for asset in w.assets),
            daily_invoice,
            ROUTER.asset,
        ],
        asset_checks=[*(check for w in WORKLOADS for check in w.checks), *ROUTER.checks],
        sensors=[*(sensor for w in WORKLOADS for sensor in w.sensors), *ROUTER.sensors],
        jobs=[nightly_submit_job],
        # This location is the local one (`make dev`, on the emulator): one process per run, not
        # one per step (a step subprocess took 15-35 s here). Your own Definitions keep the
        # executor you choose; Dagster's default is the multiprocess executor.
        executor=dg.in_process_executor,
        schedules=[nightly_schedule],
        resources={"batch_gateway": resource or BatchGatewayResource(emulator_url=dg.EnvVar(EMULATOR_URL_ENV))},
    )


defs = build_definitions()
