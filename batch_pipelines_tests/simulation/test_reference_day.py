"""A 2,000-call reference day end to end: router, flush, watchdog, workloads, ledger, emulator over loopback."""

from __future__ import annotations

from decimal import Decimal

import pyarrow.parquet as pq

from batch_pipelines.core.day_traffic import TrafficConfig
from batch_pipelines.reference_day import simulate_day
from batch_pipelines.reports.day_outputs import write_calls_parquet

SMALL_DAY = TrafficConfig(
    seed=3,
    calls=2_000,
    hours=2.0,
    deadlines={"none": 0.3, "1": 0.1, "2": 0.2, "3": 0.2, "6": 0.2},
    workloads={"classification": ("gpt-5.4-mini", 100), "evals": ("claude-sonnet-4.6", 50)},
    workload_hour=0.5,
    workload_deadline_hours=3.0,
)
# The realistic provider's faults (expiring batches, item errors, 429s) with a day squeezed into
# two hours: turnaround median 10 min, p95 1 h, so the watchdog has deadlines to rescue.
SQUEEZED = {
    "seed": 5,
    "batch_completion_seconds": {"median": 600, "p95": 3600, "min": 30, "max": 86400},
    "item_error_rate": 0.01,
    "item_error_kinds": {"invalid_request_400": 1, "server_error_500": 2, "rate_limited_429": 2},
    "expire_rate": 0.01,
    "unfinished_at_expiry": 0.5,
    "sync_429_rate": 0.02,
    "retry_after_seconds": 2,
}


def test_a_2000_call_day_loses_nothing_misses_nothing_and_its_totals_equal_the_ledger(tmp_path):
    """Every call ends in one terminal state before its deadline; the records' exact costs sum to the ledger's total."""
    run = simulate_day(SMALL_DAY, tmp_path / "day", profile=SQUEEZED)
    figures = run.figures
    assert figures.calls == 2_150
    assert figures.lost == 0
    assert figures.misses == 0
    ledger_side = sum((r.cost for r in run.records if r.kind != "interactive"), Decimal(0))
    assert ledger_side == run.ledger_total_usd
    assert figures.realised_usd == run.ledger_total_usd + run.interactive_total_usd
    assert figures.realised_usd < figures.all_sync_usd  # the batch lane earned its discount
    assert {"interactive, sync lane", "deferrable, batch lane", "workload, batch lane"} <= set(figures.by_lane)
    table = pq.read_table(write_calls_parquet(run.records, tmp_path / "calls.parquet"))
    assert table.num_rows == 2_150
    assert sum(table.column("cost_usd").to_pylist(), Decimal(0)) == sum((r.cost for r in run.records), Decimal(0))
