"""Collect one ended batch: download, reconcile every item, price it, record it, table it.

Replaying a collection is harmless: the ledger closes each item's attempt once
(compare-and-set), so a crash half-way through is repaired by collecting again.

Items the result files say nothing about take their kind from how the batch ended: a batch
that failed validation fails them (with the batch's error), an expired batch expires them, a
cancelled one cancels them, and a completed batch reports them missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

from batch_pipelines.core.batches import BatchInfo
from batch_pipelines.core.errors import BatchPipelinesError
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.providers.results_parsing import ParseReport
from batch_pipelines.results.parquet import OutcomeParquetWriter

_CHUNK = 5000
_MISSING_AS: dict[BatchStatus, OutcomeKind] = {
    BatchStatus.FAILED: OutcomeKind.FAILED,
    BatchStatus.EXPIRED: OutcomeKind.EXPIRED,
    BatchStatus.CANCELLED: OutcomeKind.CANCELLED,
}


class BatchNotEndedError(BatchPipelinesError):
    """Results were asked of a batch that has not reached a terminal status."""


@dataclass
class ReconcileSummary:
    """What one collection found and recorded."""

    provider: str
    vendor_batch_id: str
    status: BatchStatus
    expected: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    recorded: int = 0
    cost_usd: Decimal = Decimal(0)
    sync_equivalent_usd: Decimal = Decimal(0)
    queue_full: bool = False
    report: ParseReport = field(default_factory=ParseReport)
    parquet_path: Path | None = None

    @property
    def outcomes(self) -> int:
        return sum(self.counts.values())


def _batch_failure_reason(info: BatchInfo) -> tuple[str, str | None]:
    if info.errors:
        first = info.errors[0]
        return f"the batch failed: {first.message or first.code}", first.code
    return f"the batch ended {info.status.value} without a result for this item", None


def _settle_missing(outcomes: Iterator[ItemOutcome], info: BatchInfo) -> Iterator[ItemOutcome]:
    kind = _MISSING_AS.get(info.status)
    if kind is None:
        yield from outcomes
        return
    reason, code = _batch_failure_reason(info) if kind is OutcomeKind.FAILED else (
        f"the batch was {info.status.value} before this item ran", None
    )
    for outcome in outcomes:
        if outcome.kind is OutcomeKind.MISSING:
            outcome = replace(outcome, kind=kind, reason=reason, error_code=code)
        yield outcome


def collect_results(
    ledger: Any,
    client: Any,
    batch: Any,
    *,
    work_dir: str | Path,
    price_book: Any,
    job: str | None = None,
    partition: str | None = None,
    parquet_path: str | Path | None = None,
) -> ReconcileSummary:
    """Download and reconcile the ended ``batch`` (a ledger ``BatchRow`` or a ``BatchInfo``).

    Every item the ledger assigned to the batch gets exactly one outcome, priced with
    ``price_book`` on the batch lane and written to the ledger in chunks; with
    ``parquet_path`` the outcomes are also written as a Parquet table. A batch refused for a
    full queue (``token_limit_exceeded``) records nothing: its items never ran, and the
    summary says ``queue_full`` so the caller can release and resubmit them.
    """
    lane = client.batch
    job = job or getattr(batch, "job", None)
    partition = partition or getattr(batch, "partition", None)
    if not job or not partition:
        raise ValueError("collect_results needs the job and partition (a ledger BatchRow carries them)")
    info = lane.get(batch.vendor_batch_id)
    ledger.update_batches([info])
    summary = ReconcileSummary(info.provider, info.vendor_batch_id, info.status)
    if not info.is_terminal:
        raise BatchNotEndedError(
            f"batch {info.vendor_batch_id} is {info.status.value}; results exist only once it ends",
            vendor_batch_id=info.vendor_batch_id,
            status=info.status.value,
        )
    if info.is_queue_full:
        summary.queue_full = True
        return summary
    model = info.model or getattr(batch, "model", None)
    expected = [item.custom_id for item in ledger.iter_items(job, partition, batch_key=info.vendor_batch_id)]
    summary.expected = len(expected)
    files = lane.download_results(info, Path(work_dir) / info.vendor_batch_id)
    outcomes = _settle_missing(lane.iter_outcomes(files, expected, model=model, report=summary.report), info)
    writer = OutcomeParquetWriter(parquet_path) if parquet_path is not None else None
    try:
        chunk: list[ItemOutcome] = []
        costs: dict[str, tuple[Decimal, Decimal]] = {}
        for outcome in outcomes:
            summary.counts[outcome.kind.value] = summary.counts.get(outcome.kind.value, 0) + 1
            priced_model = outcome.model if outcome.model in price_book else model
            if priced_model and (outcome.usage.input_tokens or outcome.usage.output_tokens):
                cost = price_book.cost(priced_model, outcome.usage, Lane.BATCH)
                costs[outcome.custom_id] = (cost.cost_usd, cost.sync_equivalent_usd)
                summary.cost_usd += cost.cost_usd
                summary.sync_equivalent_usd += cost.sync_equivalent_usd
            if writer is not None:
                writer.write(outcome, costs.get(outcome.custom_id))
            chunk.append(outcome)
            if len(chunk) >= _CHUNK:
                summary.recorded += ledger.record_outcomes(job, partition, info.vendor_batch_id, chunk, costs, lane=Lane.BATCH)
                chunk, costs = [], {}
        if chunk:
            summary.recorded += ledger.record_outcomes(job, partition, info.vendor_batch_id, chunk, costs, lane=Lane.BATCH)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        summary.parquet_path = writer.close()
    return summary
