"""Reconcile a partition: collect every ended batch, record each outcome, run the retry rounds.

Every ended batch of the partition is claimed (one worker collects it), its result files are
streamed to disk and every expected custom_id becomes one outcome in the ledger and in the
attempt's Parquet file. Then the retry rounds send again what deserves it, and once no item
is left unfinished the partition's table is written. Every step reads the ledger first, so a
run killed anywhere is finished by the next one.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from batch_pipelines.core.item_status import ItemStatus
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Lane
from batch_pipelines.ledger import BatchRow, Ledger, PartitionTotals
from batch_pipelines.results.partition_table import AttemptTableWriter, write_partition_table
from batch_pipelines.services.partition_work import PartitionWork, WorkDirs
from batch_pipelines.services.recording import OutcomeRecorder, charge_unreadable_lines
from batch_pipelines.services.retry_rounds import RetryRounds, RoundsSent
from batch_pipelines.services.routing import ProviderRouter
from batch_pipelines.services.sync_runs import SyncRunKind


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconcile collected and sent, and the partition's totals after it."""

    job: str
    partition: str
    complete: bool  # no item left unfinished: the table is written
    totals: PartitionTotals
    collected_batches: tuple[str, ...] = ()
    retried_on_sync: int = 0
    promoted: int = 0  # attempts the deadline watchdog ran on the sync lane
    promotion_extra_cost_usd: Decimal = Decimal(0)  # what promotions cost beyond the batch price
    paid_twice_usd: Decimal = Decimal(0)  # answers the batch still delivered for promoted items
    resubmitted: int = 0
    new_batch_ids: tuple[str, ...] = ()
    results_path: Path | None = None
    batch_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class PromotionCosts:
    promoted: int = 0
    extra_cost_usd: Decimal = Decimal(0)
    paid_twice_usd: Decimal = Decimal(0)


class Reconciler:
    """Collects ended batches, runs the retry rounds, and writes the table when all is terminal."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        router: ProviderRouter,
        recorder: OutcomeRecorder,
        rounds: RetryRounds,
        price_book: PriceBook,
        dirs: WorkDirs,
    ) -> None:
        self.ledger = ledger
        self.router = router
        self.recorder = recorder
        self.rounds = rounds
        self.price_book = price_book
        self.dirs = dirs

    def reconcile(self, work: PartitionWork, *, worker: str) -> ReconcileReport:
        job, partition = work.job, work.partition
        rebuild = work.hooks.rebuild_requests
        sent = RoundsSent()
        if rebuild is not None:
            # First finish a round a dead run left half-sent: resending it re-attaches to the batch
            # it already created (same round, same intent key) and assigns the items to it, so the
            # collection below finds them there instead of an empty batch.
            self.rounds.resume_stranded(work, rebuild, sent)
        collected: list[str] = []
        for row in self.ledger.batches(job, partition):
            if not row.status.is_terminal or row.reconciled:
                continue
            if not self.ledger.claim_batch_for_reconcile(row.provider, row.vendor_batch_id, worker=worker):
                continue  # another worker has it; its results land in the ledger all the same
            try:
                self._collect_batch(work, row)
            except BaseException:
                # Give the claim back so the next run (another worker id) can collect at once
                # instead of waiting for the claim to go stale; the replay is harmless (CAS).
                self.ledger.release_batch_claim(row.provider, row.vendor_batch_id, worker=worker)
                raise
            self.ledger.mark_batch_reconciled(row.provider, row.vendor_batch_id, worker=worker)
            collected.append(row.vendor_batch_id)

        if rebuild is not None:
            self.rounds.run(work, rebuild, sent)

        counts = self.ledger.item_counts(job, partition)
        complete = (
            counts.get(ItemStatus.PENDING, 0) + counts.get(ItemStatus.SUBMITTED, 0) == 0
        )  # a new batch's items are 'submitted'
        batch_ids = tuple(r.vendor_batch_id for r in self.ledger.batches(job, partition))
        totals = self.ledger.partition_totals(job, partition)
        promotions = self._promotion_costs(work)
        results_path = None
        if complete:
            results_path = write_partition_table(
                self.dirs.attempts(work), self.dirs.table(work), self.ledger, job, partition, work.hooks.vector_column
            )
        return ReconcileReport(
            job=job,
            partition=partition,
            complete=complete,
            totals=totals,
            collected_batches=tuple(collected),
            retried_on_sync=sent.retried_on_sync,
            promoted=promotions.promoted,
            promotion_extra_cost_usd=promotions.extra_cost_usd,
            paid_twice_usd=promotions.paid_twice_usd,
            resubmitted=sent.resubmitted,
            new_batch_ids=tuple(sent.new_batch_ids),
            results_path=results_path,
            batch_ids=batch_ids,
        )

    def _promotion_costs(self, work: PartitionWork) -> PromotionCosts:
        """Promotions' extra cost: the sync premium over the batch price, plus answers paid twice."""
        promoted = 0
        extra = paid_twice = Decimal(0)
        for group in self.ledger.attempt_groups(work.job, work.partition):
            if group.promoted:
                promoted += group.attempts
                batch_price = self.price_book.cost(group.model, group.usage, Lane.BATCH).cost_usd
                extra += group.cost_usd - batch_price
            if group.superseded:
                paid_twice += group.cost_usd
                extra += group.cost_usd
        return PromotionCosts(promoted, extra, paid_twice)

    def _collect_batch(self, work: PartitionWork, row: BatchRow) -> None:
        job, partition = work.job, work.partition
        client = self.router.client(row.provider)
        info = client.batch.get(row.vendor_batch_id)
        self.ledger.update_batches([info])
        if info.is_queue_full:
            # Nothing ran: the items go back to pending without spending an attempt.
            self.ledger.release_items(job, partition, batch_key=row.vendor_batch_id)
            return
        # Set-wise, in blocks of custom_ids (no ItemRow per item): at 100,000 items the row-by-row
        # read was about half the results phase.
        expected = self._custom_ids(job, partition, batch_key=row.vendor_batch_id)
        # Items the watchdog promoted away from this batch keep their open attempt under it: the
        # batch may still have answered them, and that answer was paid for. Expecting them too
        # records it (as superseded, paid twice); ids never in this batch close no attempt.
        promoted = self._custom_ids(job, partition, batch_key_prefix=SyncRunKind.PROMOTION.key_prefix)
        if promoted:
            held = set(expected)
            expected += [custom_id for custom_id in promoted if custom_id not in held]
        files = client.batch.download_results(info, self.dirs.downloads(work, row.vendor_batch_id))
        model = info.model or row.model
        outcomes = client.batch.iter_outcomes(files, expected, model=model)
        billed = client.batch.reported_usage(info)
        if billed is not None:
            outcomes = charge_unreadable_lines(outcomes, billed)
        attempt_file = self.dirs.attempt_file(work, row.vendor_batch_id)
        with AttemptTableWriter(attempt_file, work.hooks.vector_column) as writer:
            self.recorder.record(work, row.vendor_batch_id, outcomes, Lane.BATCH, writer, model)

    def _custom_ids(
        self, job: str, partition: str, *, batch_key: str | None = None, batch_key_prefix: str | None = None
    ) -> list[str]:
        """The custom_ids of a partition's items under ``batch_key`` (or its prefix), custom_id order."""
        custom_ids: list[str] = []
        for block in self.ledger.read_item_columns(
            job, partition, ["custom_id"], batch_key=batch_key, batch_key_prefix=batch_key_prefix
        ):
            custom_ids.extend(block.column(0).to_pylist())
        return custom_ids
