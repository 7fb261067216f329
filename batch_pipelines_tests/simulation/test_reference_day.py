"""A small reference day end to end: router, buffer, flush, watchdog, workloads, ledger and emulator over loopback."""

from __future__ import annotations

from decimal import Decimal

import pyarrow.parquet as pq

from batch_pipelines.core.day_traffic import TrafficConfig
from batch_pipelines.reference_day import simulate_day
from batch_pipelines.reports.day_outputs import write_calls_parquet

SMALL_DAY = TrafficConfig(
    seed=3,
    calls=120,
    hours=3.0,
    workloads={"classification": ("gpt-5.4-mini", 20), "evals": ("claude-sonnet-4.6", 10)},
    workload_hour=0.5,
)


def test_a_small_day_loses_nothing_misses_nothing_and_its_totals_equal_the_ledger(tmp_path):
    """Every call ends in one terminal state before its deadline; the records' exact costs sum to the ledger's total."""
    run = simulate_day(SMALL_DAY, tmp_path / "day")
    figures = run.figures
    assert figures.calls == 150
    assert figures.lost == 0
    assert figures.misses == 0
    ledger_side = sum((r.cost for r in run.records if r.kind != "interactive"), Decimal(0))
    assert ledger_side == run.ledger_total_usd
    assert figures.realised_usd == run.ledger_total_usd + run.interactive_total_usd
    assert figures.realised_usd < figures.all_sync_usd  # the batch lane earned its discount
    assert {"interactive, sync lane", "deferrable, batch lane", "workload, batch lane"} <= set(figures.by_lane)
    table = pq.read_table(write_calls_parquet(run.records, tmp_path / "calls.parquet"))
    assert table.num_rows == 150
    assert sum(table.column("cost_usd").to_pylist(), Decimal(0)) == sum((r.cost for r in run.records), Decimal(0))
