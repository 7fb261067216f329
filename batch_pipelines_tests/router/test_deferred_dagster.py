"""The router in a real Dagster instance: the flush sensor, the completion sensor and the deferred_calls asset."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from batch_pipelines import BatchGatewayResource, deferred_router
from batch_pipelines.core.flush import FlushPolicy
from batch_pipelines.dagster_layer.deferred import BUFFER_DEPTH, DEFERRED_CALLS_KEY
from batch_pipelines_tests.dagster_layer.flow import all_assets, latest_metadata, tick
from batch_pipelines_tests.router.conftest import chat


def test_flush_sensor_completion_sensor_and_hourly_asset_with_checks(emu, tmp_path):
    """Calls flushed by the sensor are collected by the hour's run, which shows the proof and passes its checks."""
    resource = BatchGatewayResource(
        emulator_url=emu.base_url,
        ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite'}",
        results_dir=str(tmp_path / "results"),
        work_dir=str(tmp_path / "work"),
    )
    policy = FlushPolicy(max_calls=5)
    router_defs = deferred_router(start_date="2026-01-01-00:00", budget_usd_per_hour="1.00", flush_policy=policy)
    defs = dg.Definitions(
        assets=[router_defs.asset],
        asset_checks=list(router_defs.checks),
        sensors=router_defs.sensors,
        resources={"batch_gateway": resource},
    )
    instance = dg.DagsterInstance.ephemeral()
    router = resource.build_router(policy)
    ids = [router.call(chat(i)).id for i in range(10)]
    late = router.call(chat(10), deadline=timedelta(seconds=-60))  # even sync is late: served at once, warned
    assert late.status == "succeeded" and late.warning

    flushed = tick(defs, router_defs.flush_sensor, instance)
    observed = flushed.asset_events[0]
    assert observed.asset_key == DEFERRED_CALLS_KEY and observed.metadata[BUFFER_DEPTH].value == 0
    assert observed.metadata["flushed_to_batch"].value == 10
    assert {h.status for h in router.get_many(ids)} == {"submitted"}

    assert tick(defs, router_defs.completion_sensor, instance).run_requests == []  # batches still running
    emu.advance(3600)
    requests = tick(defs, router_defs.completion_sensor, instance).run_requests
    assert len(requests) == 1
    hour = requests[0].partition_key

    result = dg.materialize(
        all_assets(defs),
        selection=requests[0].asset_selection,
        partition_key=hour,
        instance=instance,
        resources={"batch_gateway": resource},
    )
    assert result.success
    metadata = latest_metadata(instance, DEFERRED_CALLS_KEY, hour)
    assert metadata["items_total"] == 11 and metadata["items_succeeded"] == 11
    assert metadata["deadline_warnings"] == 1 and late.id in metadata["deadline_warnings_detail"]
    assert 40 < metadata["savings_pct"] < 50  # ten calls at half price, one at the sync price
    assert len(metadata["flushes"]) == 3
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {"success_rate_at_least", "cost_within_budget"}
    assert all(c.passed for c in checks)
    assert {h.status for h in router.get_many(ids)} == {"succeeded"}
    assert tick(defs, router_defs.completion_sensor, instance).run_requests == []  # nothing left to collect
    router.close()
