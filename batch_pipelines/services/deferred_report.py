"""The proof for a window of flushes: their reconcile reports merged into one, as the Dagster asset shows it.

The ``deferred_calls`` asset is partitioned by the hour its flushes were made; one hour holds
any number of flushes (each its own ledger partition). Merging their reports gives the same
proof a workload partition has: counts, tokens, cost, sync-equivalent cost, savings, promotions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from batch_pipelines.core.item_status import ItemStatus
from batch_pipelines.core.usage import ZERO_USAGE
from batch_pipelines.ledger import ModelTotals, PartitionTotals
from batch_pipelines.services.reconcile import ReconcileReport


@dataclass(frozen=True)
class WindowReport:
    """A window's flushes: which are collected, which still run, and the merged report once all are."""

    flush_ids: tuple[str, ...]
    unfinished: tuple[str, ...]
    report: ReconcileReport | None  # None until every flush of the window is collected
    # (call id, warning) of calls whose deadline even the sync lane could not meet: said, never hidden
    deadline_warnings: tuple[tuple[str, str], ...] = ()

    @property
    def complete(self) -> bool:
        return bool(self.flush_ids) and not self.unfinished


def merge_reports(job: str, window: str, reports: Sequence[ReconcileReport]) -> ReconcileReport:
    """One report for ``window`` out of its flushes' reports (sums; ids concatenated)."""
    counts: dict[ItemStatus, int] = {}
    by_model: dict[str, ModelTotals] = {}
    usage = ZERO_USAGE
    cost = sync = Decimal(0)
    items = attempts = open_attempts = 0
    for report in reports:
        totals = report.totals
        items += totals.item_count
        attempts += totals.attempts
        open_attempts += totals.open_attempts
        usage += totals.usage
        cost += totals.cost_usd
        sync += totals.sync_equivalent_usd
        for status, n in totals.counts.items():
            counts[status] = counts.get(status, 0) + n
        for model, part in totals.by_model.items():
            seen = by_model.get(model)
            by_model[model] = (
                part
                if seen is None
                else ModelTotals(
                    model,
                    seen.attempts + part.attempts,
                    seen.usage + part.usage,
                    seen.cost_usd + part.cost_usd,
                    seen.sync_equivalent_usd + part.sync_equivalent_usd,
                )
            )
    merged = PartitionTotals(job, window, items, counts, attempts, open_attempts, usage, cost, sync, by_model)
    return ReconcileReport(
        job=job,
        partition=window,
        complete=all(r.complete for r in reports),
        totals=merged,
        retried_on_sync=sum(r.retried_on_sync for r in reports),
        promoted=sum(r.promoted for r in reports),
        promotion_extra_cost_usd=sum((r.promotion_extra_cost_usd for r in reports), Decimal(0)),
        paid_twice_usd=sum((r.paid_twice_usd for r in reports), Decimal(0)),
        resubmitted=sum(r.resubmitted for r in reports),
        batch_ids=tuple(b for r in reports for b in r.batch_ids),
    )
