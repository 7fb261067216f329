"""The gateway: one object that routes, submits, polls and reconciles, over the adapters.

It knows nothing of Dagster. The Dagster layer calls ``submit`` from the submit asset, ``poll``
from the completion sensor and ``reconcile`` from the results asset, and turns the reports
into metadata. The ledger, not any in-memory state here, is the source of truth, so every
method can be called again after a crash and picks up where the last call stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from batch_pipelines.core.batches import QUEUE_FULL_CODES, BatchInfo
from batch_pipelines.core.errors import BudgetExceededError
from batch_pipelines.core.lanes import (
    LanePolicy,
    RetryVerdict,
    batch_can_meet,
    choose_retry_lane,
    deadline_at_risk,
    retry_verdict,
)
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Lane, LLMRequest
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.core.usage import Usage
from batch_pipelines.ledger import Ledger
from batch_pipelines.ledger.ledger import PROMOTION_KEY_PREFIX
from batch_pipelines.providers.client import ProviderClient, build_client
from batch_pipelines.providers.config import ProviderRegistry
from batch_pipelines.results.partition_table import AttemptTableWriter, write_partition_table
from batch_pipelines.services.estimate import DEFAULT_EXPECTED_OUTPUT_TOKENS, Estimate, estimate_requests
from batch_pipelines.services.submit import submit_partition

# What an outcome transform does with a succeeded answer: parsed result columns, or an
# InvalidOutput-style exception that turns the item into invalid_output.
ParseResponse = Callable[[dict[str, Any]], Mapping[str, Any]]
RebuildRequests = Callable[[Sequence[str]], list[LLMRequest]]


# How long after its last collection a partition is still checked for stranded items.
STRANDED_LOOKBACK = timedelta(hours=24)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _charge_unreadable_lines(outcomes: Iterable[ItemOutcome], billed: Usage) -> Iterator[ItemOutcome]:
    """Put usage the vendor billed for lines we could not read onto the first missing item.

    Missing items come after every line of the files was read (``iter_outcomes`` yields them
    last), so by then the readable lines' usage is complete; what the batch's own totals say
    beyond it was billed for lines cut short or unreadable. Recording it on a missing item's
    attempt keeps the ledger's cost equal to the bill, and the item is still retried.
    """
    seen = Usage()
    charged = False
    for outcome in outcomes:
        if outcome.kind is OutcomeKind.MISSING and not charged:
            charged = True
            gap = Usage(
                max(0, billed.input_tokens - seen.input_tokens),
                max(0, billed.cached_input_tokens - seen.cached_input_tokens),
                0,
                max(0, billed.output_tokens - seen.output_tokens),
                max(0, billed.reasoning_tokens - seen.reasoning_tokens),
            )
            if gap.input_tokens or gap.output_tokens:
                outcome = replace(
                    outcome, usage=gap, reason=f"{outcome.reason}; usage billed for unreadable lines recorded here"
                )
        else:
            seen += outcome.usage
        yield outcome


def _queue_full(row: Any) -> bool:
    """A batch the vendor refused for a full queue: nothing ran, no attempt was spent."""
    return row.status is BatchStatus.FAILED and any(e.code in QUEUE_FULL_CODES for e in row.errors)


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


@dataclass(frozen=True)
class DeadlineAction:
    """What the watchdog did for one partition whose deadline is at risk."""

    job: str
    partition: str
    remaining: int
    deadline: datetime
    cancel_requested: tuple[str, ...]
    run_on_sync_now: bool  # no time left to wait for the cancellation: run the items while it goes on
    open_batch_ids: tuple[str, ...]


@dataclass
class ReconcileReport:
    job: str
    partition: str
    complete: bool
    collected_batches: list[str] = field(default_factory=list)
    retried_on_sync: int = 0
    promoted: int = 0  # attempts the deadline watchdog ran on the sync lane
    promotion_extra_cost_usd: Decimal = Decimal(0)  # what promotions cost beyond the batch price
    paid_twice_usd: Decimal = Decimal(0)  # answers the batch still delivered for promoted items
    resubmitted: int = 0
    new_batch_ids: list[str] = field(default_factory=list)
    results_path: Path | None = None
    totals: Any = None  # ledger.PartitionTotals
    batch_ids: list[str] = field(default_factory=list)


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
        client_factory: Callable[..., ProviderClient] = build_client,
    ) -> None:
        self.registry = registry
        self.ledger = ledger
        self.price_book = price_book
        self.work_dir = Path(work_dir)
        self.results_dir = Path(results_dir)
        self.policy = policy
        self._clock = clock
        self._monotonic = monotonic
        self._client_factory = client_factory
        self._clients: dict[str, ProviderClient] = {}

    # -- routing -------------------------------------------------------------------------
    def client_for_model(self, model: str) -> ProviderClient:
        return self.client(self.registry.provider_for(model).name)

    def client(self, provider: str) -> ProviderClient:
        if provider not in self._clients:
            self._clients[provider] = self._client_factory(self.registry.get(provider))
        return self._clients[provider]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self.ledger.close()

    # -- submit ----------------------------------------------------------------------------
    def estimate(
        self, requests: Sequence[LLMRequest], *, expected_output_tokens: int = DEFAULT_EXPECTED_OUTPUT_TOKENS
    ) -> Estimate:
        for model in {r.model for r in requests}:
            self.registry.provider_for(model)  # an unroutable model fails before any spend
            self.price_book.price(model)
        return estimate_requests(requests, self.price_book, expected_output=expected_output_tokens)

    def submit(
        self,
        job: str,
        partition: str,
        requests: Sequence[LLMRequest],
        *,
        budget_usd: Decimal | None = None,
        expected_output_tokens: int = DEFAULT_EXPECTED_OUTPUT_TOKENS,
    ) -> SubmitReport:
        """Estimate, refuse over budget, then submit each provider's share idempotently."""
        estimate = self.estimate(requests, expected_output_tokens=expected_output_tokens)
        if budget_usd is not None and estimate.cost_usd > Decimal(budget_usd):
            raise BudgetExceededError(
                f"estimated batch cost ${estimate.cost_usd:.4f} for {estimate.requests} requests exceeds the "
                f"budget of ${Decimal(budget_usd)}; nothing was sent",
                estimated_cost_usd=str(estimate.cost_usd),
                budget_usd=str(budget_usd),
                requests=estimate.requests,
            )
        by_provider: dict[str, list[LLMRequest]] = defaultdict(list)
        for request in requests:
            by_provider[self.registry.provider_for(request.model).name].append(request)
        batches: list[BatchInfo] = []
        for provider, share in sorted(by_provider.items()):
            batches.extend(
                submit_partition(
                    self.ledger,
                    self.client(provider),
                    share,
                    job=job,
                    partition=partition,
                    work_dir=self.work_dir / job / partition,
                )
            )
        return SubmitReport(job, partition, len(requests), tuple(batches), estimate)

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

    def _stranded(self, job: str, partition: str, rows: Sequence[Any]) -> int:
        if not rows:
            return 0  # nothing submitted yet: the submit owes these items, not a results run
        counts = self.ledger.item_counts(job, partition)
        # Items under a batch still running, or ended but not yet collected, are not stranded.
        held_ids = [r.vendor_batch_id for r in rows if not r.status.is_terminal or not r.reconciled]
        waiting, _ = self.ledger.unfinished_in_batches(job, partition, held_ids)
        return max(0, counts.get("pending", 0) + counts.get("submitted", 0) - waiting)

    # -- deadline watchdog -------------------------------------------------------------------
    def watch_deadlines(self, job: str) -> list[DeadlineAction]:
        """Cancel the batches of partitions whose deadline is at risk; say which cannot wait for it.

        Cancelling first lets the partial output be salvaged, so finished work is not paid for
        twice. When even the cancellation (up to ~10 minutes) would not leave time to finish on
        the sync lane, the caller runs the items on the sync lane at once (``promote``) while the
        batch goes on; whatever the batch still finishes is recorded as a duplicate cost.
        """
        now = self._clock()
        actions: list[DeadlineAction] = []
        for partition in self.ledger.active_partitions(job):
            open_rows = [r for r in self.ledger.batches(job, partition) if not r.status.is_terminal]
            if not open_rows:
                continue
            open_ids = [r.vendor_batch_id for r in open_rows]
            remaining, earliest = self.ledger.unfinished_in_batches(job, partition, open_ids)
            if earliest is None or not deadline_at_risk(earliest, now, remaining, self.policy):
                continue
            cancel_requested = []
            for row in open_rows:
                if row.status is not BatchStatus.CANCELLING:
                    self.ledger.update_batches([self.client(row.provider).batch.cancel(row.vendor_batch_id)])
                    cancel_requested.append(row.vendor_batch_id)
            no_time_to_wait = now + self.policy.sync_duration(remaining) + self.policy.safety_margin >= earliest
            actions.append(
                DeadlineAction(
                    job, partition, remaining, earliest, tuple(cancel_requested), no_time_to_wait, tuple(open_ids)
                )
            )
        return actions

    def promote(
        self,
        job: str,
        partition: str,
        *,
        rebuild_requests: RebuildRequests,
        parse_response: ParseResponse | None = None,
        vector_column: str | None = None,
    ) -> int:
        """Run every item still waiting on an unfinished batch on the sync lane now; returns how many."""
        open_ids = [r.vendor_batch_id for r in self.ledger.batches(job, partition) if not r.status.is_terminal]
        waiting = [
            item.custom_id
            for batch_id in open_ids
            for item in self.ledger.iter_items(job, partition, statuses=["submitted"], batch_key=batch_id)
        ]
        if not waiting:
            return 0
        attempts_dir = self.results_dir / job / partition / "attempts"
        self._run_on_sync(
            job,
            partition,
            rebuild_requests(waiting),
            attempts_dir,
            parse_response,
            vector_column,
            prefix=PROMOTION_KEY_PREFIX,
        )
        return len(waiting)

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
    ) -> ReconcileReport:
        """Collect every ended batch, retry what deserves it, and write the table once all is terminal."""
        report = ReconcileReport(job, partition, complete=False)
        attempts_dir = self.results_dir / job / partition / "attempts"
        if rebuild_requests is not None:
            # First finish a round a dead run left half-sent: resending it re-attaches to the batch
            # it already created (same round, same intent key) and assigns the items to it, so the
            # collection below finds them there instead of an empty batch.
            self._resume_stranded(job, partition, report, attempts_dir, parse_response, rebuild_requests, vector_column)
        for row in self.ledger.batches(job, partition):
            if not row.status.is_terminal or row.reconciled:
                continue
            if not self.ledger.claim_batch_for_reconcile(row.provider, row.vendor_batch_id, worker=worker):
                continue  # another worker has it; its results land in the ledger all the same
            try:
                self._collect_batch(job, partition, row, attempts_dir, parse_response, vector_column)
            except BaseException:
                # Give the claim back so the next run (another worker id) can collect at once
                # instead of waiting for the claim to go stale; the replay is harmless (CAS).
                self.ledger.release_batch_claim(row.provider, row.vendor_batch_id, worker=worker)
                raise
            self.ledger.mark_batch_reconciled(row.provider, row.vendor_batch_id, worker=worker)
            report.collected_batches.append(row.vendor_batch_id)

        if rebuild_requests is not None:
            self._resume_stranded(job, partition, report, attempts_dir, parse_response, rebuild_requests, vector_column)
            # A sync-lane retry answers at once, so what fails again transiently is retried in
            # this same run, until the items run out of attempts; a batch round ends the loop
            # (its results come back through the sensor).
            for _ in range(self.policy.max_attempts):
                sent_before = (report.retried_on_sync, len(report.new_batch_ids))
                self._retry(job, partition, report, attempts_dir, parse_response, rebuild_requests, vector_column)
                if report.new_batch_ids or (report.retried_on_sync, len(report.new_batch_ids)) == sent_before:
                    break

        counts = self.ledger.item_counts(job, partition)
        unfinished = counts.get("pending", 0) + counts.get("submitted", 0)
        report.batch_ids = [r.vendor_batch_id for r in self.ledger.batches(job, partition)]
        report.totals = self.ledger.partition_totals(job, partition)
        self._account_promotions(job, partition, report)
        if unfinished == 0:  # a new batch's items are 'submitted' until it is collected
            report.complete = True
            report.results_path = write_partition_table(
                attempts_dir,
                self.results_dir / job / f"{partition}.parquet",
                self.ledger,
                job,
                partition,
                vector_column,
            )
        return report

    def _account_promotions(self, job: str, partition: str, report: ReconcileReport) -> None:
        """Promotions' extra cost: the sync premium over the batch price, plus answers paid twice."""
        for group in self.ledger.attempt_groups(job, partition):
            if group.promoted:
                report.promoted += group.attempts
                batch_price = self.price_book.cost(group.model, group.usage, Lane.BATCH).cost_usd
                report.promotion_extra_cost_usd += group.cost_usd - batch_price
            if group.superseded:
                report.paid_twice_usd += group.cost_usd
                report.promotion_extra_cost_usd += group.cost_usd

    def _transform(
        self, outcome: ItemOutcome, parse_response: ParseResponse | None
    ) -> tuple[ItemOutcome, Mapping[str, Any]]:
        if outcome.kind is not OutcomeKind.SUCCEEDED or parse_response is None:
            return outcome, {}
        try:
            return outcome, dict(parse_response(outcome.response))
        except Exception as exc:  # the workload says the answer breaks its contract
            reason = f"{type(exc).__name__}: {exc}"[:500]
            return (
                ItemOutcome(
                    outcome.custom_id,
                    OutcomeKind.INVALID_OUTPUT,
                    reason=reason,
                    usage=outcome.usage,
                    response=outcome.response,
                    status_code=outcome.status_code,
                    model=outcome.model,
                ),
                {},
            )

    def _record(
        self,
        job: str,
        partition: str,
        batch_key: str,
        outcomes: Iterable[ItemOutcome],
        lane: Lane,
        writer: AttemptTableWriter,
        parse_response: ParseResponse | None,
        default_model: str | None,
    ) -> None:
        chunk: list[ItemOutcome] = []
        costs: dict[str, tuple[Decimal, Decimal]] = {}

        def flush() -> None:
            self.ledger.record_outcomes(job, partition, batch_key, chunk, costs, lane=lane)
            chunk.clear()
            costs.clear()

        for raw in outcomes:
            outcome, columns = self._transform(raw, parse_response)
            model = outcome.model or default_model
            if model and (outcome.usage.input_tokens or outcome.usage.output_tokens):
                priced = self.price_book.cost(model, outcome.usage, lane)
                costs[outcome.custom_id] = (priced.cost_usd, priced.sync_equivalent_usd)
            writer.add(outcome, columns, batch_key=batch_key, lane=lane, cost=costs.get(outcome.custom_id))
            chunk.append(outcome)
            if len(chunk) >= 5000:
                flush()
        if chunk:
            flush()

    def _collect_batch(self, job, partition, row, attempts_dir: Path, parse_response, vector_column) -> None:
        client = self.client(row.provider)
        info = client.batch.get(row.vendor_batch_id)
        self.ledger.update_batches([info])
        if info.is_queue_full:
            # Nothing ran: the items go back to pending without spending an attempt.
            self.ledger.release_items(job, partition, batch_key=row.vendor_batch_id)
            return
        expected = [item.custom_id for item in self.ledger.iter_items(job, partition, batch_key=row.vendor_batch_id)]
        # Items the watchdog promoted away from this batch keep their open attempt under it: the
        # batch may still have answered them, and that answer was paid for. Expecting them too
        # records it (as superseded, paid twice); ids never in this batch close no attempt.
        held = set(expected)
        expected += [
            item.custom_id
            for item in self.ledger.iter_items(job, partition, batch_key_prefix=PROMOTION_KEY_PREFIX)
            if item.custom_id not in held
        ]
        download_dir = self.work_dir / job / partition / "downloads" / row.vendor_batch_id
        files = client.batch.download_results(info, download_dir)
        outcomes = client.batch.iter_outcomes(files, expected, model=info.model or row.model)
        reported = getattr(client.batch, "reported_usage", None)
        billed = reported(info) if reported is not None else None
        if billed is not None:
            outcomes = _charge_unreadable_lines(outcomes, billed)
        with AttemptTableWriter(attempts_dir / f"{row.vendor_batch_id}.parquet", vector_column) as writer:
            self._record(
                job,
                partition,
                row.vendor_batch_id,
                outcomes,
                Lane.BATCH,
                writer,
                parse_response,
                info.model or row.model,
            )

    def _resume_stranded(
        self,
        job,
        partition,
        report: ReconcileReport,
        attempts_dir: Path,
        parse_response,
        rebuild_requests,
        vector_column,
    ) -> None:
        """Send again the items no batch or run is working on, so a partition can always finish.

        Two ways items get stranded: a run killed mid sync run or mid promotion leaves them
        'submitted' under a sync key no batch row stands for; and a full queue
        (``token_limit_exceeded``) or a run killed between ``mark_for_retry`` and the new
        submission leaves them 'pending'. Pending items that never had an attempt and no queue
        refusal explains are left alone: the partition's submit still owes them a batch.
        """
        rows = self.ledger.batches(job, partition)
        if any(not r.status.is_terminal for r in rows):
            return  # wait: the open batches may still be a queue's reason to refuse
        batch_keys = {r.vendor_batch_id for r in rows}
        now = self._clock()
        by_key: dict[str, list[Any]] = defaultdict(list)
        for item in self.ledger.iter_items(job, partition, statuses=["submitted"]):
            if item.batch_key not in batch_keys:
                by_key[item.batch_key].append(item)
        for key, items in by_key.items():
            # A sync run still going (another worker) keeps touching its items; only a quiet key
            # is presumed dead. Releasing gives the attempt back and drops its open attempt row.
            quiet_for = max(timedelta(minutes=10), 2 * self.policy.sync_duration(len(items)))
            if max(i.updated_at for i in items) <= now - quiet_for:
                self.ledger.release_items(job, partition, batch_key=key)

        refused = [r for r in rows if _queue_full(r)]
        pending = [i for i in self.ledger.iter_items(job, partition, statuses=["pending"]) if refused or i.attempts > 0]
        if not pending:
            return
        ids = [i.custom_id for i in pending]
        deadlines = [i.deadline for i in pending if i.deadline is not None]
        deadline = min(deadlines) if deadlines else None
        limit: int | None = None
        if refused and batch_can_meet(deadline, now, self.policy):
            # The queue refused work: stay on the batch lane (no attempt was spent), in pieces
            # half the size of the smallest refused batch, while the deadline allows.
            sizes = [self._intent_size(r) for r in refused]
            limit = max(1, min(sizes) // 2)
            lane = Lane.BATCH
        else:
            lane = choose_retry_lane(len(ids), deadline, now, self.policy)
        round_no = max(i.attempts for i in pending)
        self._send_round(
            job,
            partition,
            report,
            attempts_dir,
            parse_response,
            rebuild_requests(ids),
            vector_column,
            lane,
            round_no,
            limit,
        )

    def _intent_size(self, row: Any) -> int:
        intent = self.ledger.get_intent(row.intent_key) if row.intent_key else None
        return intent.item_count if intent is not None else (row.total or 1)

    def _send_round(
        self,
        job,
        partition,
        report: ReconcileReport,
        attempts_dir: Path,
        parse_response,
        requests,
        vector_column,
        lane: Lane,
        round_no: int,
        max_shard_requests: int | None = None,
    ) -> None:
        """Send ``requests`` again on ``lane``; ``round_no`` is the attempts the items already made.

        Deriving the round from the items (not from the rounds seen so far) keeps the intent key
        of a round stable: a run killed after creating a retry batch but before assigning its
        items computes the same key when it resumes and re-attaches instead of paying again.
        """
        if lane is Lane.SYNC:
            self._run_on_sync(job, partition, requests, attempts_dir, parse_response, vector_column)
            report.retried_on_sync += len(requests)
            return
        by_provider: dict[str, list[LLMRequest]] = defaultdict(list)
        for request in requests:  # a partition may mix providers: each gets its own batches
            by_provider[self.registry.provider_for(request.model).name].append(request)
        for provider, share in sorted(by_provider.items()):
            infos = submit_partition(
                self.ledger,
                self.client(provider),
                share,
                job=job,
                partition=partition,
                work_dir=self.work_dir / job / partition / f"round-{round_no}",
                round=round_no,
                max_shard_requests=max_shard_requests,
            )
            report.resubmitted += len(share)
            report.new_batch_ids.extend(i.vendor_batch_id for i in infos)

    def _retry(
        self,
        job,
        partition,
        report: ReconcileReport,
        attempts_dir: Path,
        parse_response,
        rebuild_requests,
        vector_column,
    ) -> None:
        retry_ids: list[str] = []
        deadlines: list[datetime] = []
        round_no = 0
        for item in self.ledger.iter_items(
            job, partition, statuses=[k.value for k in OutcomeKind if k is not OutcomeKind.SUCCEEDED]
        ):
            if (
                retry_verdict(item.status, item.attempts, item.status_code, self.policy, item.error_code)
                is RetryVerdict.RETRY
            ):
                retry_ids.append(item.custom_id)
                round_no = max(round_no, item.attempts)
                if item.deadline is not None:
                    deadlines.append(item.deadline)
        if not retry_ids:
            return
        lane = choose_retry_lane(len(retry_ids), min(deadlines) if deadlines else None, self._clock(), self.policy)
        self.ledger.mark_for_retry(job, partition, retry_ids, lane=lane)
        self._send_round(
            job,
            partition,
            report,
            attempts_dir,
            parse_response,
            rebuild_requests(retry_ids),
            vector_column,
            lane,
            round_no,
        )

    def _run_on_sync(
        self,
        job,
        partition,
        requests: list[LLMRequest],
        attempts_dir: Path,
        parse_response,
        vector_column,
        *,
        prefix: str = "sync-",
    ) -> None:
        ids = sorted(r.custom_id for r in requests)
        # A fresh key per run: the ledger refuses to reuse one, so a replay cannot double-count.
        batch_key = prefix + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16] + f"-{uuid.uuid4().hex[:8]}"
        if prefix == PROMOTION_KEY_PREFIX:
            self.ledger.promote_items(job, partition, ids, batch_key=batch_key, lane=Lane.SYNC)
        else:
            self.ledger.assign_items(job, partition, ids, batch_key=batch_key, lane=Lane.SYNC)
        by_model: dict[str, list[LLMRequest]] = defaultdict(list)
        for request in requests:
            by_model[request.model].append(request)
        with AttemptTableWriter(attempts_dir / f"{batch_key}.parquet", vector_column) as writer:
            for model, share in by_model.items():
                outcomes = asyncio.run(self.client_for_model(model).sync.run_many(share))
                self._record(job, partition, batch_key, outcomes, Lane.SYNC, writer, parse_response, model)
