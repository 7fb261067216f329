"""The deadline watchdog: cancel batches that would finish too late, and promote their items.

Cancelling first lets the partial output be salvaged, so finished work is not paid for twice.
When even the cancellation (up to ~10 minutes) would not leave time to finish on the sync
lane, the caller runs the items on the sync lane at once (``promote``) while the batch goes
on; whatever the batch still finishes is recorded as a duplicate cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from batch_pipelines.core.errors import ProviderError
from batch_pipelines.core.item_status import ItemStatus
from batch_pipelines.core.lanes import LanePolicy, deadline_at_risk
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.ledger import Ledger
from batch_pipelines.services.partition_work import PartitionWork
from batch_pipelines.services.routing import ProviderRouter
from batch_pipelines.services.sync_runs import SyncRunKind, SyncRunner

log = logging.getLogger(__name__)


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


class DeadlineWatch:
    """Watches a job's open batches against their items' deadlines; promotes what cannot wait."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        router: ProviderRouter,
        sync_runner: SyncRunner,
        policy: LanePolicy,
        clock: Callable[[], datetime],
    ) -> None:
        self.ledger = ledger
        self.router = router
        self.sync_runner = sync_runner
        self.policy = policy
        self._clock = clock

    def watch(self, job: str) -> list[DeadlineAction]:
        """Cancel the batches of partitions whose deadline is at risk; say which cannot wait for it."""
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
            cancel_failed = False
            for row in open_rows:
                if row.status is not BatchStatus.CANCELLING:
                    try:
                        cancelled = self._cancel(row.provider, row.vendor_batch_id)
                    except ProviderError as exc:
                        # The cancel only saves money; the deadline is the required work. A server
                        # that cannot cancel (no route, 5xx) leaves the sync lane, right now.
                        log.warning("could not cancel %s (%s); promoting its items now", row.vendor_batch_id, exc)
                        cancel_failed = True
                        continue
                    if not cancelled:
                        continue
                    cancel_requested.append(row.vendor_batch_id)
            no_time_to_wait = (
                cancel_failed or now + self.policy.sync_duration(remaining) + self.policy.safety_margin >= earliest
            )
            actions.append(
                DeadlineAction(
                    job, partition, remaining, earliest, tuple(cancel_requested), no_time_to_wait, tuple(open_ids)
                )
            )
        return actions

    def _cancel(self, provider: str, vendor_batch_id: str) -> bool:
        """Ask the vendor to cancel; False when the batch ended since the last poll (a 4xx refusal).

        The ledger's status is only as fresh as the last poll: a batch that completed in between
        cannot be cancelled (OpenAI answers 400), and its answers are good, so record what the
        vendor says now and let the collection pick it up.
        """
        lane = self.router.client(provider).batch
        try:
            info = lane.cancel(vendor_batch_id)
        except ProviderError as exc:
            if exc.status_code not in (400, 409):
                raise
            info = lane.get(vendor_batch_id)
            if not info.status.is_terminal:
                raise
            self.ledger.update_batches([info])
            return False
        self.ledger.update_batches([info])
        return True

    def promote(self, work: PartitionWork) -> int:
        """Run every item still waiting on an unfinished batch on the sync lane now; returns how many."""
        rebuild = work.hooks.rebuild_requests
        if rebuild is None:
            raise ValueError("promoting items needs the workload's rebuild_requests hook")
        job, partition = work.job, work.partition
        open_ids = [r.vendor_batch_id for r in self.ledger.batches(job, partition) if not r.status.is_terminal]
        waiting = [
            item.custom_id
            for batch_id in open_ids
            for item in self.ledger.iter_items(job, partition, statuses=[ItemStatus.SUBMITTED], batch_key=batch_id)
        ]
        if not waiting:
            return 0
        self.sync_runner.run(work, rebuild(waiting), SyncRunKind.PROMOTION)
        return len(waiting)
