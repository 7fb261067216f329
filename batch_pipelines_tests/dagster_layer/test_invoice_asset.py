"""daily_invoice on a real DagsterInstance, after a real classification run against the emulator."""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from batch_pipelines.dagster_layer import metadata_keys as keys
from batch_pipelines.dagster_layer.invoice import DAILY_INVOICE_KEY
from batch_pipelines.definitions import build_definitions, daily_invoice
from batch_pipelines.reports.charts import PNG_SIGNATURE
from batch_pipelines.workloads import classification
from batch_pipelines_tests.dagster_layer.flow import latest_metadata, materialize
from batch_pipelines_tests.dagster_layer.test_flow import DAY, _drive_to_results, _submit


def test_daily_invoice_materializes_the_day_spend_as_plottable_floats_markdown_and_png(emu, instance, resource):
    """After a classification run, today's invoice equals its cost and all-sync cost, with table and chart."""
    defs = build_definitions(resource)
    wdefs = classification.defs
    assert _submit(defs, instance, resource, wdefs.workload, DAY, rows=30).success
    _drive_to_results(defs, instance, resource, emu, wdefs, DAY)
    results = latest_metadata(instance, wdefs.workload.results_key, DAY)
    # The resource's ledger records on the wall clock: the money was spent today (UTC).
    today = datetime.now(UTC).date().isoformat()
    run = materialize(defs, instance, [DAILY_INVOICE_KEY], today, {"batch_gateway": resource})
    assert run.success
    meta = latest_metadata(instance, DAILY_INVOICE_KEY, today)
    assert Decimal(meta[keys.COST_USD_EXACT]) == Decimal(results[keys.COST_USD_EXACT])
    for key in (keys.COST_USD, keys.SYNC_EQUIVALENT_USD, keys.SAVINGS_USD, keys.SAVINGS_PCT):
        assert isinstance(meta[key], float)
    assert meta[keys.SYNC_EQUIVALENT_USD] == pytest.approx(results[keys.SYNC_EQUIVALENT_USD], rel=1e-12)
    assert meta[keys.SAVINGS_PCT] == pytest.approx(results[keys.SAVINGS_PCT], rel=1e-9)
    assert "| classification | batch | gpt-5.4-mini |" in meta[keys.SUMMARY]
    assert meta[keys.INVOICE_CHART].startswith("![spend by workload](data:image/png;base64,")
    assert Path(meta[keys.INVOICE_CHART_PATH]).read_bytes()[:8] == PNG_SIGNATURE


def test_daily_invoice_is_daily_and_downstream_of_the_daily_results():
    """The asset has daily partitions and depends on the daily workloads' results and the router's deferred_calls."""
    spec = daily_invoice.specs_by_key[DAILY_INVOICE_KEY]
    assert isinstance(daily_invoice.partitions_def, dg.DailyPartitionsDefinition)
    upstream = {dep.asset_key for dep in spec.deps}
    assert classification.defs.workload.results_key in upstream
    assert dg.AssetKey("deferred_calls") in upstream
    assert len(upstream) == 4
