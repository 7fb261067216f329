"""When a group of buffered calls is flushed, and how a flush is cut into batches. Pure functions.

Deferrable calls wait in the buffer grouped by provider, model and endpoint. A group is due at
a size threshold, at an age threshold, or earlier when one of its deadlines cannot wait for the
age threshold (the watchdog must keep time to rescue it, see ``core.lanes``). A due group is
cut into parts: calls whose deadline is too close for any batch go to the sync lane now; calls
with deadlines go into batches banded by deadline, each small enough for the watchdog to rescue
all of it in time (a late deadline never waits in a batch the watchdog must cancel for an early
one); calls without a deadline go into one batch of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from batch_pipelines.core.lanes import LanePolicy, choose_call_lane, human_duration, max_rescuable_calls, rescue_time
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.turnaround import TurnaroundEstimate


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """The buffer's thresholds: a group flushes at ``max_calls`` calls or when its oldest is ``max_age`` old."""

    max_calls: int = 10_000
    max_age: timedelta = timedelta(minutes=15)
    # A flush claimed longer ago than this and still not submitted is presumed dead and taken over.
    claim_lease: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        if self.max_age < timedelta(0):
            raise ValueError("max_age must not be negative")
        if self.claim_lease <= timedelta(0):
            raise ValueError("claim_lease must be positive")


@dataclass(frozen=True, slots=True)
class WaitingGroup:
    """What the buffer holds for one provider, model and endpoint."""

    provider: str
    model: str
    endpoint: str
    waiting: int
    oldest: datetime  # when the oldest waiting call was enqueued
    earliest_deadline: datetime | None


@dataclass(frozen=True, slots=True)
class FlushDecision:
    due: bool
    reason: str


def flush_due(
    group: WaitingGroup,
    *,
    now: datetime,
    flush_policy: FlushPolicy,
    lane_policy: LanePolicy,
    turnaround: TurnaroundEstimate | None = None,
) -> FlushDecision:
    """Whether ``group`` should be flushed now, and why."""
    if group.waiting <= 0:
        return FlushDecision(False, "Nothing is waiting.")
    if group.waiting >= flush_policy.max_calls:
        return FlushDecision(
            True, f"{group.waiting} calls waiting reach the size threshold ({flush_policy.max_calls})."
        )
    age = now - group.oldest
    if age >= flush_policy.max_age:
        return FlushDecision(True, f"The oldest call has waited {human_duration(age)}, the age threshold.")
    deadline = group.earliest_deadline
    if deadline is not None:
        wait = flush_policy.max_age - age
        if choose_call_lane(deadline=deadline, now=now, group_size=1, policy=lane_policy).lane is Lane.SYNC:
            return FlushDecision(True, "A call's deadline is too close for a batch: it goes to the sync lane now.")
        later = choose_call_lane(deadline=deadline, now=now, group_size=1, policy=lane_policy, flush_wait=wait)
        if later.lane is Lane.SYNC:
            return FlushDecision(
                True,
                f"Waiting {human_duration(wait)} for the age threshold would leave the watchdog "
                "no time to rescue a call.",
            )
        if turnaround is not None:
            batch_time_later = deadline - now - rescue_time(1, lane_policy, wait)
            if batch_time_later < turnaround.p90:
                return FlushDecision(
                    True,
                    f"Flushing now keeps a deadline comfortable: batches of this model take up to "
                    f"{human_duration(turnaround.p90)} nine times in ten.",
                )
    return FlushDecision(
        False,
        f"{group.waiting} call(s) waiting, the oldest for {human_duration(age)}: the group flushes at "
        f"{flush_policy.max_calls} calls or after {human_duration(flush_policy.max_age)}.",
    )


@dataclass(frozen=True, slots=True)
class WaitingCall:
    call_id: str
    deadline: datetime | None


@dataclass(frozen=True, slots=True)
class FlushPart:
    """Calls that leave the buffer together: one sync run, or one batch submission."""

    lane: Lane
    call_ids: tuple[str, ...]
    earliest_deadline: datetime | None
    reason: str
    warnings: dict[str, str] = field(default_factory=dict)  # call_id -> why it may still be late


def plan_flush(
    calls: Sequence[WaitingCall],
    *,
    now: datetime,
    lane_policy: LanePolicy,
    turnaround: TurnaroundEstimate | None = None,
) -> list[FlushPart]:
    """Cut a due group into parts: sync now, batches banded by deadline, one batch without deadlines.

    A deadline band starts at the earliest deadline ``d`` not yet placed and takes later ones up
    to ``now + 2 (d - now)``, and no more calls than the watchdog could rescue before ``d``.
    """
    sync_ids: list[str] = []
    warnings: dict[str, str] = {}
    undated: list[str] = []
    dated: list[tuple[datetime, str]] = []
    for call in calls:
        if call.deadline is None:
            undated.append(call.call_id)
            continue
        choice = choose_call_lane(
            deadline=call.deadline, now=now, group_size=1, policy=lane_policy, turnaround=turnaround
        )
        if choice.lane is Lane.SYNC:
            sync_ids.append(call.call_id)
            if choice.warning is not None:
                warnings[call.call_id] = choice.warning
        else:
            dated.append((call.deadline, call.call_id))
    parts: list[FlushPart] = []
    if sync_ids:
        on_sync = set(sync_ids)
        earliest = min(c.deadline for c in calls if c.call_id in on_sync and c.deadline is not None)
        parts.append(
            FlushPart(Lane.SYNC, tuple(sync_ids), earliest, "Deadlines too close for a batch.", dict(warnings))
        )
    dated.sort()
    band: list[str] = []
    band_start: datetime | None = None
    band_end = now
    band_limit = 0
    for deadline, call_id in dated:
        if band and (deadline > band_end or len(band) >= band_limit):
            parts.append(_band_part(band, band_start))
            band = []
        if not band:
            band_start = deadline
            band_end = now + 2 * (deadline - now)
            band_limit = max(1, max_rescuable_calls(deadline, now, lane_policy))
        band.append(call_id)
    if band:
        parts.append(_band_part(band, band_start))
    if undated:
        parts.append(FlushPart(Lane.BATCH, tuple(undated), None, "No deadline: the batch lane."))
    return parts


def _band_part(call_ids: list[str], earliest: datetime | None) -> FlushPart:
    return FlushPart(
        Lane.BATCH,
        tuple(call_ids),
        earliest,
        "Deadlines that leave the watchdog time to rescue: the batch lane, watched.",
    )
