"""The gateway: one facade that submits, polls and reconciles, over the services that do each job.

It knows nothing of Dagster. The Dagster layer calls ``submit`` from the submit asset, ``poll``
from the completion sensor, ``watch_deadlines``/``promote`` from the deadline watchdog and
``reconcile`` from the results asset, and turns the reports into metadata. The ledger, not any
in-memory state here, is the source of truth, so every method can be called again after a crash
and picks up where the last call stopped.

Who does what:

    routing        ProviderRouter: model -> provider, one client per provider, group by provider
    reconcile      Reconciler: collect ended batches, record outcomes, write the table
    retry_rounds   RetryRounds: stranded items and retries, on the sync lane or as new batches
    deadlines      DeadlineWatch: cancel batches that would be late, promote their items
    sync_runs      SyncRunner: run items on the sync lane now (a retry or a promotion)
    recording      OutcomeRecorder: parse, price and record outcomes
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from batch_pipelines.core.batches import BatchInfo
from batch_pipelines.core.errors import BudgetExceededError
from batch_pipelines.core.item_status import ItemStatus
from batch_pipelines.core.lanes import LanePolicy
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import LLMRequest
from batch_pipelines.ledger import BatchRow, Ledger
from batch_pipelines.providers.client import ProviderClient, build_client
from batch_pipelines.providers.config import ProviderRegistry
from batch_pipelines.services.deadlines import DeadlineAction, DeadlineWatch
from batch_pipelines.services.estimate import DEFAULT_EXPECTED_OUTPUT_TOKENS, Estimate, estimate_requests
from batch_pipelines.services.partition_work import (
    KeepResponses,
    ParseResponse,
    PartitionWork,
    RebuildRequests,
    WorkDirs,
    WorkloadHooks,
)
from batch_pipelines.services.reconcile import Reconciler, ReconcileReport
from batch_pipelines.services.recording import OutcomeRecorder
from batch_pipelines.services.retry_rounds import RetryRounds
from batch_pipelines.services.routing import ClientFactory, ProviderRouter
from batch_pipelines.services.submit import submit_partition
from batch_pipelines.services.sync_runs import SyncRunKind, SyncRunner

__all__ = [
    "DeadlineAction",
    "Gateway",
    "ParseResponse",
    "PartitionProgress",
    "PollReport",
    "RebuildRequests",
    "ReconcileReport",
    "SubmitReport",
]

# How long after its last collection a partition is still checked for stranded items.
STRANDED_LOOKBACK = timedelta(hours=24)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SubmitReport:
    job: str
    partition: str
    items: int
    batches: tuple[BatchInfo, ...]
    estimate: Estimate


@dataclass(frozen=True)
class PartitionProgress:
    """Where one partition's batches stand, from the ledger after a poll."""

    job: str
    partition: str
    batch_ids: tuple[str, ...]
    statuses: Mapping[str, int]
    total: int
    completed: int
    failed: int
    all_terminal: bool
    unreconciled_ids: tuple[str, ...]
    stranded: int = 0  # unfinished items no open batch holds (a crashed run's, or a full queue's)

    @property
    def ready_for_results(self) -> bool:
        """Every batch ended and one has results nobody collected yet, or items wait on no batch.

        The second case is a results run that died after collecting (mid sync retry, between
        mark_for_retry and the new submission): only another results run can finish them.
        """
        return self.all_terminal and bool(self.unreconciled_ids or self.stranded)

    @property
    def needs_watching(self) -> bool:
        """A batch still open or uncollected, or items stranded: worth an observation and a look."""
        return not self.all_terminal or bool(self.unreconciled_ids or self.stranded)

    @property
    def status_summary(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))


@dataclass(frozen=True)
class PollReport:
    partitions: Mapping[str, PartitionProgress]
    polled: int
    out_of_time: bool


class Gateway:
    """Routes requests to providers and keeps the ledger true to what the providers did."""

    def __init__(
        self,
        *,
        registry: ProviderRegistry,
        ledger: Ledger,
        price_book: PriceBook,
        work_dir: Path,
        results_dir: Path,
        policy: LanePolicy = LanePolicy(),
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        client_factory: ClientFactory = build_client,
    ) -> None:
        self.registry = registry
        self.ledger = ledger
        self.price_book = price_book
        self.work_dir = Path(work_dir)
        self.results_dir = Path(results_dir)
        self.policy = policy
        self._clock = clock
        self._monotonic = monotonic
        self._router = ProviderRouter(registry, client_factory)
        self._dirs = WorkDirs(self.work_dir, self.results_dir)
        recorder = OutcomeRecorder(ledger, price_book)
        sync_runner = self._sync_runner = SyncRunner(ledger, self._router, recorder, self._dirs)
        rounds = RetryRounds(
            ledger=ledger, router=self._router, sync_runner=sync_runner, dirs=self._dirs, policy=policy, clock=clock
        )
        self._reconciler = Reconciler(
            ledger=ledger, router=self._router, recorder=recorder, rounds=rounds, price_book=price_book, dirs=self._dirs
        )
        self._deadlines = DeadlineWatch(
            ledger=ledger, router=self._router, sync_runner=sync_runner, policy=policy, clock=clock
        )

    # -- routing -------------------------------------------------------------------------
    def results_path(self, job: str, partition: str) -> Path:
        """Where ``partition``'s result table is written (names escaped into safe file names)."""
        return self._dirs.table(PartitionWork(job, partition))

    def client_for_model(self, model: str) -> ProviderClient:
        return self._router.client_for_model(model)

    def client(self, provider: str) -> ProviderClient:
        return self._router.client(provider)

    def close(self) -> None:
        self._router.close()
        self.ledger.close()

    # -- submit ----------------------------------------------------------------------------
    def estimate(
        self, requests: Iterable[LLMRequest], *, expected_output_tokens: int = DEFAULT_EXPECTED_OUTPUT_TOKENS
    ) -> Estimate:
        def check(model: str) -> None:
            self.registry.provider_for(model)  # an unroutable model fails before any spend
            self.price_book.price(model)

        return estimate_requests(requests, self.price_book, expected_output=expected_output_tokens, check_model=check)

    def submit(
        self,
        job: str,
        partition: str,
        requests: Iterable[LLMRequest],
        *,
        budget_usd: Decimal | None = None,
        expected_output_tokens: int = DEFAULT_EXPECTED_OUTPUT_TOKENS,
    ) -> SubmitReport:
        """Estimate, refuse over budget, then submit each provider's share idempotently.

        ``requests`` is walked once for the estimate and once per provider: a re-iterable that
        builds them on each pass (``RequestStream``) keeps a large partition's memory flat; a
        one-shot iterator is read into a list first.
        """
        if iter(requests) is requests:
            requests = list(requests)
        estimate = self.estimate(requests, expected_output_tokens=expected_output_tokens)
        if budget_usd is not None and estimate.cost_usd > Decimal(budget_usd):
            raise BudgetExceededError(
                f"estimated batch cost ${estimate.cost_usd:.4f} for {estimate.requests} requests exceeds the "
                f"budget of ${Decimal(budget_usd)}; nothing was sent",
                estimated_cost_usd=str(estimate.cost_usd),
                budget_usd=str(budget_usd),
                requests=estimate.requests,
            )
        work = PartitionWork(job, partition)
        batches: list[BatchInfo] = []
        for provider, share in self._router.shares(requests, models=estimate.per_model):
            batches.extend(
                submit_partition(
                    self.ledger,
                    self.client(provider),
                    share,
                    job=job,
                    partition=partition,
                    work_dir=self._dirs.submit(work),
                )
            )
        return SubmitReport(job, partition, estimate.requests, tuple(batches), estimate)

    # -- poll ------------------------------------------------------------------------------
    def poll(self, job: str, *, time_budget_s: float = 40.0) -> PollReport:
        """Refresh the job's open batches (one list call per page per provider), within a time budget."""
        started = self._monotonic()
        open_rows = [row for row in self.ledger.open_batches() if row.job == job]
        by_provider: dict[str, set[str]] = defaultdict(set)
        oldest: dict[str, datetime] = {}
        for row in open_rows:
            by_provider[row.provider].add(row.vendor_batch_id)
            if row.created_at is not None:
                oldest[row.provider] = min(oldest.get(row.provider, row.created_at), row.created_at)
        polled = 0
        out_of_time = False
        for provider, ids in sorted(by_provider.items()):
            if self._monotonic() - started > time_budget_s:
                out_of_time = True  # the rest waits for the next tick
                break
            # List pages come newest first: stop paging once past the oldest batch we wait for.
            created_after = oldest[provider] - timedelta(minutes=1) if provider in oldest else None
            infos = self.client(provider).batch.poll(ids, created_after=created_after)
            self.ledger.update_batches(infos.values())
            polled += len(infos)
        # Recently reconciled partitions too: a results run that died after collecting leaves
        # items stranded (waiting on no batch) that only another results run can finish.
        recent = self._clock() - STRANDED_LOOKBACK
        partitions = {p: self.progress(job, p) for p in self.ledger.active_partitions(job, reconciled_since=recent)}
        partitions = {p: progress for p, progress in partitions.items() if progress.needs_watching}
        return PollReport(partitions, polled, out_of_time)

    def progress(self, job: str, partition: str) -> PartitionProgress:
        rows = self.ledger.batches(job, partition)
        statuses: dict[str, int] = defaultdict(int)
        for row in rows:
            statuses[row.status.value] += 1
        return PartitionProgress(
            job=job,
            partition=partition,
            batch_ids=tuple(r.vendor_batch_id for r in rows),
            statuses=dict(statuses),
            total=sum(r.total or 0 for r in rows),
            completed=sum(r.completed or 0 for r in rows),
            failed=sum(r.failed or 0 for r in rows),
            all_terminal=all(r.status.is_terminal for r in rows),
            unreconciled_ids=tuple(r.vendor_batch_id for r in rows if r.status.is_terminal and not r.reconciled),
            stranded=self._stranded(job, partition, rows),
        )

    def _stranded(self, job: str, partition: str, rows: Sequence[BatchRow]) -> int:
        if not rows:
            return 0  # nothing submitted yet: the submit owes these items, not a results run
        counts = self.ledger.item_counts(job, partition)
        # Items under a batch still running, or ended but not yet collected, are not stranded.
        held_ids = [r.vendor_batch_id for r in rows if not r.status.is_terminal or not r.reconciled]
        waiting, _ = self.ledger.unfinished_in_batches(job, partition, held_ids)
        return max(0, counts.get(ItemStatus.PENDING, 0) + counts.get(ItemStatus.SUBMITTED, 0) - waiting)

    # -- deadline watchdog -------------------------------------------------------------------
    def watch_deadlines(self, job: str) -> list[DeadlineAction]:
        """Cancel the batches of partitions whose deadline is at risk; say which cannot wait for it."""
        return self._deadlines.watch(job)

    def promote(
        self,
        job: str,
        partition: str,
        *,
        rebuild_requests: RebuildRequests,
        parse_response: ParseResponse | None = None,
        vector_column: str | None = None,
        keep_responses: KeepResponses | None = None,
    ) -> int:
        """Run every item still waiting on an unfinished batch on the sync lane now; returns how many."""
        hooks = WorkloadHooks(parse_response, rebuild_requests, vector_column, keep_responses)
        return self._deadlines.promote(PartitionWork(job, partition, hooks))

    # -- sync lane -------------------------------------------------------------------------
    def run_on_sync(
        self,
        job: str,
        partition: str,
        requests: Sequence[LLMRequest],
        *,
        parse_response: ParseResponse | None = None,
        vector_column: str | None = None,
        keep_responses: KeepResponses | None = None,
    ) -> None:
        """Record ``requests`` as items of the partition and run them on the sync lane now.

        A crash part-way leaves the items submitted under a sync key no batch stands for;
        ``reconcile`` with ``rebuild_requests`` finds and finishes them (never this method again).
        """
        for provider, share in self._router.by_provider(requests):
            self.ledger.record_items(job, partition, share, provider=provider)
        hooks = WorkloadHooks(parse_response, None, vector_column, keep_responses)
        self._sync_runner.run(PartitionWork(job, partition, hooks), requests, SyncRunKind.RETRY)

    # -- reconcile -------------------------------------------------------------------------
    def reconcile(
        self,
        job: str,
        partition: str,
        *,
        parse_response: ParseResponse | None = None,
        rebuild_requests: RebuildRequests | None = None,
        vector_column: str | None = None,
        worker: str = "gateway",
        keep_responses: KeepResponses | None = None,
    ) -> ReconcileReport:
        """Collect every ended batch, retry what deserves it, and write the table once all is terminal."""
        hooks = WorkloadHooks(parse_response, rebuild_requests, vector_column, keep_responses)
        return self._reconciler.reconcile(PartitionWork(job, partition, hooks), worker=worker)
