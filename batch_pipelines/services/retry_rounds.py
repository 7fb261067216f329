"""Retry rounds: send again what deserves another attempt, and what a dead run left stranded.

A round goes to the sync lane (small remainders, or a deadline too near for a batch) or out as
new batches. The round number comes from the items' attempts, not from rounds seen so far, so
a run killed after creating a retry batch computes the same intent key when it resumes and
re-attaches instead of paying again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from batch_pipelines.core.batches import QUEUE_FULL_CODES
from batch_pipelines.core.item_status import RETRYABLE_ITEM_STATUSES, ItemStatus
from batch_pipelines.core.lanes import LanePolicy, RetryVerdict, choose_call_lane, choose_retry_lane, retry_verdict
from batch_pipelines.core.requests import Lane, LLMRequest
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.ledger import BatchRow, ItemRow, Ledger
from batch_pipelines.services.partition_work import PartitionWork, RebuildRequests, WorkDirs
from batch_pipelines.services.routing import ProviderRouter
from batch_pipelines.services.submit import submit_partition
from batch_pipelines.services.sync_runs import SyncRunKind, SyncRunner


@dataclass
class RoundsSent:
    """What the retry rounds of one reconcile sent, and where."""

    retried_on_sync: int = 0
    resubmitted: int = 0
    new_batch_ids: list[str] = field(default_factory=list)

    @property
    def mark(self) -> tuple[int, int]:
        """Changes whenever a round sends anything."""
        return self.retried_on_sync, len(self.new_batch_ids)


def queue_full(row: BatchRow) -> bool:
    """A batch the vendor refused for a full queue: nothing ran, no attempt was spent."""
    return row.status is BatchStatus.FAILED and any(e.code in QUEUE_FULL_CODES for e in row.errors)


class RetryRounds:
    """Decides each retry round's lane and sends it (sync run now, or new batches)."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        router: ProviderRouter,
        sync_runner: SyncRunner,
        dirs: WorkDirs,
        policy: LanePolicy,
        clock: Callable[[], datetime],
    ) -> None:
        self.ledger = ledger
        self.router = router
        self.sync_runner = sync_runner
        self.dirs = dirs
        self.policy = policy
        self._clock = clock

    def run(self, work: PartitionWork, rebuild: RebuildRequests, sent: RoundsSent) -> None:
        """Stranded items first, then retries until the items run out of attempts or a batch round goes out.

        A sync-lane retry answers at once, so what fails again transiently is retried in this
        same run; a batch round ends the loop (its results come back through the sensor).
        """
        self.resume_stranded(work, rebuild, sent)
        for _ in range(self.policy.max_attempts):
            before = sent.mark
            self.retry(work, rebuild, sent)
            if sent.new_batch_ids or sent.mark == before:
                break

    def resume_stranded(self, work: PartitionWork, rebuild: RebuildRequests, sent: RoundsSent) -> None:
        """Send again the items no batch or run is working on, so a partition can always finish.

        Two ways items get stranded: a run killed mid sync run or mid promotion leaves them
        'submitted' under a sync key no batch row stands for; and a full queue
        (``token_limit_exceeded``) or a run killed between ``mark_for_retry`` and the new
        submission leaves them 'pending'. Pending items that never had an attempt and no queue
        refusal explains are left alone: the partition's submit still owes them a batch.
        """
        job, partition = work.job, work.partition
        rows = self.ledger.batches(job, partition)
        if any(not r.status.is_terminal for r in rows):
            return  # wait: the open batches may still be a queue's reason to refuse
        batch_keys = {r.vendor_batch_id for r in rows}
        now = self._clock()
        by_key: dict[str, list[ItemRow]] = defaultdict(list)
        # Two counts first: when every 'submitted' item waits on a batch row, none is stranded,
        # and the partition's items need not be read one by one (100,000 rows at results time).
        submitted = self.ledger.item_counts(job, partition).get(ItemStatus.SUBMITTED, 0)
        on_batches, _ = self.ledger.unfinished_in_batches(job, partition, sorted(batch_keys))
        waiting: Iterable[ItemRow] = (
            self.ledger.iter_items(job, partition, statuses=[ItemStatus.SUBMITTED]) if on_batches < submitted else ()
        )
        for item in waiting:
            if item.batch_key is not None and item.batch_key not in batch_keys:  # 'submitted' always has a key
                by_key[item.batch_key].append(item)
        for key, items in by_key.items():
            # A sync run still going (another worker) keeps touching its items; only a quiet key
            # is presumed dead. Releasing gives the attempt back and drops its open attempt row.
            quiet_for = max(timedelta(minutes=10), 2 * self.policy.sync_duration(len(items)))
            if max(i.updated_at for i in items) <= now - quiet_for:
                self.ledger.release_items(job, partition, batch_key=key)

        refused = [r for r in rows if queue_full(r)]
        pending = [
            i
            for i in self.ledger.iter_items(job, partition, statuses=[ItemStatus.PENDING])
            if refused or i.attempts > 0
        ]
        if not pending:
            return
        ids = [i.custom_id for i in pending]
        deadlines = [i.deadline for i in pending if i.deadline is not None]
        deadline = min(deadlines) if deadlines else None
        limit: int | None = None
        on_batch = choose_call_lane(deadline=deadline, now=now, group_size=len(ids), policy=self.policy).lane
        if refused and on_batch is Lane.BATCH:
            # The queue refused work: stay on the batch lane (no attempt was spent), in pieces
            # half the size of the smallest refused batch, while the watchdog could still rescue them.
            limit = max(1, min(self._intent_size(r) for r in refused) // 2)
            lane = Lane.BATCH
        else:
            lane = choose_retry_lane(len(ids), deadline, now, self.policy)
        round_no = max(i.attempts for i in pending)
        self._send(work, rebuild(ids), lane, round_no, sent, limit)

    def retry(self, work: PartitionWork, rebuild: RebuildRequests, sent: RoundsSent) -> None:
        """One round for every item whose outcome the policy says to retry."""
        retry_ids: list[str] = []
        deadlines: list[datetime] = []
        round_no = 0
        for item in self.ledger.iter_items(work.job, work.partition, statuses=RETRYABLE_ITEM_STATUSES):
            verdict = retry_verdict(item.status, item.attempts, item.status_code, self.policy, item.error_code)
            if verdict is RetryVerdict.RETRY:
                retry_ids.append(item.custom_id)
                round_no = max(round_no, item.attempts)
                if item.deadline is not None:
                    deadlines.append(item.deadline)
        if not retry_ids:
            return
        lane = choose_retry_lane(len(retry_ids), min(deadlines) if deadlines else None, self._clock(), self.policy)
        self.ledger.mark_for_retry(work.job, work.partition, retry_ids, lane=lane)
        self._send(work, rebuild(retry_ids), lane, round_no, sent)

    def _intent_size(self, row: BatchRow) -> int:
        intent = self.ledger.get_intent(row.intent_key) if row.intent_key else None
        return intent.item_count if intent is not None else (row.total or 1)

    def _send(
        self,
        work: PartitionWork,
        requests: Sequence[LLMRequest],
        lane: Lane,
        round_no: int,
        sent: RoundsSent,
        max_shard_requests: int | None = None,
    ) -> None:
        """Send ``requests`` again on ``lane``; ``round_no`` is the attempts the items already made."""
        if lane is Lane.SYNC:
            self.sync_runner.run(work, requests, SyncRunKind.RETRY)
            sent.retried_on_sync += len(requests)
            return
        for provider, share in self.router.by_provider(requests):
            infos = submit_partition(
                self.ledger,
                self.router.client(provider),
                share,
                job=work.job,
                partition=work.partition,
                work_dir=self.dirs.retry_round(work, round_no),
                round=round_no,
                max_shard_requests=max_shard_requests,
            )
            sent.resubmitted += len(share)
            sent.new_batch_ids.extend(i.vendor_batch_id for i in infos)
