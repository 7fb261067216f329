"""Flush the buffer into batches, collect them, and watch their deadlines, on the gateway's own machinery.

- ``flush`` claims every due group (``core.flush.flush_due``), cut into parts by
  ``core.flush.plan_flush``; a batch part is sent with ``Gateway.submit`` (intent keys, caps,
  sharding, prompt-prefix grouping), so a flush replayed after a crash re-attaches to the batch
  it created; a sync part runs with ``Gateway.run_on_sync``. Flushes whose flusher died are
  taken over after ``FlushPolicy.claim_lease``.
- ``collect`` polls the deferred batches and reconciles every flush whose batches have ended
  (``Gateway.reconcile``: one outcome per call, retries, salvage of cancelled batches).
- ``watch`` is the deadline watchdog of ``Gateway.watch_deadlines``: batches whose calls'
  deadlines are at risk are cancelled (their finished lines are salvaged by ``collect``) and,
  when even the cancellation cannot be waited for, their calls are promoted to the sync lane.

Each flush is its own ledger partition (job ``deferred``), so the watchdog cancels only the
batch of the calls at risk. Everything takes the ledger's clock: a test or a simulated day
drives it by moving that clock.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from batch_pipelines.core.flush import FlushPolicy, WaitingGroup, flush_due, plan_flush
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.core.turnaround import TurnaroundEstimate
from batch_pipelines.ledger.deferred import DEFERRED_JOB, DeferredBuffer, FlushRow
from batch_pipelines.ledger.deferred_schema import FLUSH_CLAIMED, FLUSH_COLLECTED, FLUSH_SUBMITTED
from batch_pipelines.services.deferred_report import WindowReport, merge_reports
from batch_pipelines.services.gateway import Gateway

# How many recent batches of a model the turnaround estimate looks at.
TURNAROUND_HISTORY = 200


@dataclass
class FlushReport:
    flushes: list[FlushRow] = field(default_factory=list)
    taken_over: list[str] = field(default_factory=list)  # flush ids a dead flusher had claimed
    reasons: dict[str, str] = field(default_factory=dict)  # "provider/model endpoint" -> why (not) flushed

    @property
    def calls(self) -> int:
        return sum(f.call_count for f in self.flushes)

    def by_lane(self) -> dict[Lane, int]:
        counts = {Lane.BATCH: 0, Lane.SYNC: 0}
        for flush in self.flushes:
            counts[flush.lane] += flush.call_count
        return counts


@dataclass
class CollectReport:
    collected: list[str] = field(default_factory=list)  # flushes whose every call is now terminal
    waiting: list[str] = field(default_factory=list)  # flushes with a batch still running
    retried: int = 0
    # flush id -> answers a cancelled batch still delivered for promoted calls (paid twice, shown)
    paid_twice_usd: dict[str, Decimal] = field(default_factory=dict)


@dataclass
class WatchReport:
    cancelled_batches: list[str] = field(default_factory=list)
    promoted_calls: int = 0


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class DeferredFlusher:
    """The buffer's flush, collection and deadline watch, over one gateway."""

    def __init__(
        self,
        gateway: Gateway,
        buffer: DeferredBuffer,
        *,
        flush_policy: FlushPolicy = FlushPolicy(),
        worker: str | None = None,
        crash_hook: Callable[[str], None] | None = None,
    ) -> None:
        self.gateway = gateway
        # Called with "claimed" (calls taken, nothing sent) and "sent" (batch created, flush not yet
        # marked), so the crash-safety tests can stop a flusher at exactly those points.
        self._crash_hook = crash_hook or (lambda step: None)
        self.buffer = buffer
        self.flush_policy = flush_policy
        self.worker = worker or default_worker_id()
        self._clock = buffer.ledger.clock

    # -- flush ------------------------------------------------------------------------------

    def flush(self, *, everything: bool = False) -> FlushReport:
        """Send every due group (every waiting call with ``everything``) to its lane."""
        report = FlushReport()
        for flush in self.buffer.take_over_stale(worker=self.worker, lease=self.flush_policy.claim_lease):
            report.taken_over.append(flush.flush_id)
            self._send(flush)
            report.flushes.append(flush)
        for group in self.buffer.waiting_groups():
            turnaround = self.turnaround(group.provider, group.model)
            name = f"{group.provider}/{group.model} {group.endpoint}"
            decision = flush_due(
                group,
                now=self._clock(),
                flush_policy=self.flush_policy,
                lane_policy=self.gateway.policy,
                turnaround=turnaround,
            )
            report.reasons[name] = "Flushed on request (--all)." if everything else decision.reason
            if not (everything or decision.due):
                continue
            for flush in self._claim_group(group, turnaround, everything=everything):
                self._send(flush)
                report.flushes.append(flush)
        return report

    def flush_calls(self, group: WaitingGroup, call_ids: Sequence[str]) -> list[FlushRow]:
        """Flush these calls of ``group`` now, whatever the thresholds (a deadline that cannot wait)."""
        flushes = self.buffer.claim(
            group,
            worker=self.worker,
            limit=len(call_ids),
            plan=lambda waiting: plan_flush(waiting, now=self._clock(), lane_policy=self.gateway.policy),
            only=call_ids,
        )
        for flush in flushes:
            self._send(flush)
        return flushes

    def _claim_group(
        self, group: WaitingGroup, turnaround: TurnaroundEstimate | None, *, everything: bool
    ) -> list[FlushRow]:
        """Claim the group a flush at a time (at most ``max_calls`` each) while it stays due."""
        claimed: list[FlushRow] = []
        current: WaitingGroup | None = group
        while current is not None:
            flushes = self.buffer.claim(
                current,
                worker=self.worker,
                limit=self.flush_policy.max_calls,
                plan=lambda waiting: plan_flush(
                    waiting, now=self._clock(), lane_policy=self.gateway.policy, turnaround=turnaround
                ),
            )
            if not flushes:
                return claimed
            claimed.extend(flushes)
            current = self._still_due(current, turnaround, everything=everything)
        return claimed

    def _still_due(
        self, group: WaitingGroup, turnaround: TurnaroundEstimate | None, *, everything: bool
    ) -> WaitingGroup | None:
        key = (group.provider, group.model, group.endpoint)
        for now_waiting in self.buffer.waiting_groups():
            if (now_waiting.provider, now_waiting.model, now_waiting.endpoint) != key:
                continue
            if everything:
                return now_waiting
            decision = flush_due(
                now_waiting,
                now=self._clock(),
                flush_policy=self.flush_policy,
                lane_policy=self.gateway.policy,
                turnaround=turnaround,
            )
            return now_waiting if decision.due else None
        return None

    def _send(self, flush: FlushRow) -> None:
        self._crash_hook("claimed")
        requests = self.requests_for(flush.flush_id)
        if flush.lane is Lane.BATCH:
            self.gateway.submit(DEFERRED_JOB, flush.flush_id, requests)
        else:
            # A dead flusher's sync run may have begun: send only what it never sent (absent, or
            # pending with no attempt). What it left mid-run ('submitted' under its run's key) is
            # finished by ``collect`` (the reconcile's stranded items), so nothing runs twice.
            known = {item.custom_id: item for item in self.gateway.ledger.iter_items(DEFERRED_JOB, flush.flush_id)}
            unsent = [
                r
                for r in requests
                if r.custom_id not in known
                or (known[r.custom_id].status == "pending" and known[r.custom_id].attempts == 0)
            ]
            if unsent:
                self.gateway.run_on_sync(
                    DEFERRED_JOB, flush.flush_id, unsent, keep_responses=self.buffer.keep_responses
                )
        self._crash_hook("sent")
        self.buffer.mark_submitted(flush.flush_id, worker=self.worker)

    def requests_for(self, flush_id: str, call_ids: Sequence[str] | None = None) -> list[LLMRequest]:
        calls = self.buffer.calls_of(flush_id)
        wanted = None if call_ids is None else set(call_ids)
        return [
            LLMRequest(
                custom_id=call.call_id,
                endpoint=Endpoint(call.endpoint),
                model=call.model,
                body=json.loads(call.body),
                deadline=call.deadline,
            )
            for call in calls
            if wanted is None or call.call_id in wanted
        ]

    def _rebuilder(self, flush_id: str) -> Callable[[Sequence[str]], list[LLMRequest]]:
        def rebuild(call_ids: Sequence[str]) -> list[LLMRequest]:
            return self.requests_for(flush_id, call_ids)

        return rebuild

    # -- collect ----------------------------------------------------------------------------

    def collect(self, flush_ids: Collection[str] | None = None) -> CollectReport:
        """Poll the deferred batches and reconcile every flush (of ``flush_ids``) whose batches all ended."""
        report = CollectReport()
        submitted = [f for f in self.buffer.flushes([FLUSH_SUBMITTED]) if flush_ids is None or f.flush_id in flush_ids]
        if not submitted:
            return report
        if any(f.lane is Lane.BATCH for f in submitted):  # a sync flush has no batch to ask about
            self.gateway.poll(DEFERRED_JOB)
        for flush in submitted:
            progress = self.gateway.progress(DEFERRED_JOB, flush.flush_id)
            if not progress.all_terminal:
                report.waiting.append(flush.flush_id)
                continue
            result = self.gateway.reconcile(
                DEFERRED_JOB,
                flush.flush_id,
                rebuild_requests=self._rebuilder(flush.flush_id),
                worker=self.worker,
                keep_responses=self.buffer.keep_responses,
            )
            report.retried += result.retried_on_sync + result.resubmitted
            report.paid_twice_usd[flush.flush_id] = result.paid_twice_usd
            if result.complete and self.buffer.mark_collected(flush.flush_id):
                report.collected.append(flush.flush_id)
            elif not result.complete:
                report.waiting.append(flush.flush_id)
        return report

    def ready_windows(self, window_of: Callable[[datetime], str]) -> dict[str, tuple[str, ...]]:
        """Windows (``window_of(flush creation time)``) whose open flushes' batches have all ended.

        Maps each to what makes its collection new: its flush ids and their batch ids (a retry
        batch adds one, so a window whose retries end is collected again).
        """
        self.gateway.poll(DEFERRED_JOB)
        by_window: dict[str, list[FlushRow]] = {}
        for flush in self.buffer.flushes([FLUSH_CLAIMED, FLUSH_SUBMITTED]):
            by_window.setdefault(window_of(flush.created_at), []).append(flush)
        ready: dict[str, tuple[str, ...]] = {}
        for window, flushes in sorted(by_window.items()):
            if any(f.state == FLUSH_CLAIMED for f in flushes):
                continue  # still being sent
            progress = [self.gateway.progress(DEFERRED_JOB, f.flush_id) for f in flushes]
            if all(p.all_terminal for p in progress):
                ready[window] = tuple(sorted(f.flush_id for f in flushes)) + tuple(
                    sorted(b for p in progress for b in p.batch_ids)
                )
        return ready

    def collect_window(self, start: datetime, end: datetime, *, window: str) -> WindowReport:
        """Collect what has ended, then report the flushes made in [start, end) once all are collected."""
        self.collect([f.flush_id for f in self.buffer.flushes(since=start) if f.created_at < end])
        flushes = [f for f in self.buffer.flushes(since=start) if f.created_at < end]
        ids = tuple(f.flush_id for f in flushes)
        unfinished = tuple(f.flush_id for f in flushes if f.state != FLUSH_COLLECTED)
        if not ids or unfinished:
            return WindowReport(ids, unfinished, None)
        reports = [
            self.gateway.reconcile(
                DEFERRED_JOB,
                flush_id,
                rebuild_requests=self._rebuilder(flush_id),
                worker=self.worker,
                keep_responses=self.buffer.keep_responses,
            )
            for flush_id in ids
        ]
        warnings = tuple(self.buffer.warned_calls(ids))
        return WindowReport(ids, (), merge_reports(DEFERRED_JOB, window, reports), warnings)

    # -- deadlines --------------------------------------------------------------------------

    def watch(self) -> WatchReport:
        """Cancel batches whose calls' deadlines are at risk; promote what cannot wait for the cancel."""
        report = WatchReport()
        for action in self.gateway.watch_deadlines(DEFERRED_JOB):
            report.cancelled_batches.extend(action.cancel_requested)
            if action.run_on_sync_now:
                report.promoted_calls += self.gateway.promote(
                    DEFERRED_JOB,
                    action.partition,
                    rebuild_requests=self._rebuilder(action.partition),
                    keep_responses=self.buffer.keep_responses,
                )
        return report

    # -- learned turnaround -----------------------------------------------------------------

    def turnaround(self, provider: str, model: str) -> TurnaroundEstimate | None:
        """What the ledger's completed batches of this provider and model say of their turnaround."""
        return TurnaroundEstimate.from_durations(self.buffer.batch_durations(provider, model, TURNAROUND_HISTORY))

    def now(self) -> datetime:
        return self._clock()
