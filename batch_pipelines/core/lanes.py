"""Lane decisions: where a call or a retry goes, and when a deadline forces the sync lane. Pure functions.

The batch lane is half price but may take up to its whole window (24 h); the sync lane is full
price and as fast as the rate limits allow. A batch attempt costs at most the sync price for the
part that runs late: a cancelled batch bills only the lines it finished, and the deadline
watchdog sends the rest to the sync lane. So the batch lane is worth trying whenever the
deadline still leaves the watchdog time to rescue the work (sync time for the group, the
cancellation allowance, the safety margin, and the wait for the flush), not only when the whole
24-hour window fits.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from batch_pipelines.core.outcomes import OutcomeKind, is_transient_failure
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.turnaround import TurnaroundEstimate


@dataclass(frozen=True, slots=True)
class LanePolicy:
    """How hard to try, and how to weigh the two lanes' timing."""

    max_attempts: int = 3  # total attempts per item, the first one included
    max_invalid_output_attempts: int = 2  # an off-contract answer is asked again at most this often in all
    sync_remainder_threshold: int = 100  # a remainder this small goes to the sync lane at once
    batch_window: timedelta = timedelta(hours=24)  # the longest a batch may take (the vendor's promise)
    sync_items_per_second: float = 5.0  # conservative sync throughput under rate limits
    safety_margin: timedelta = timedelta(minutes=30)
    cancel_allowance: timedelta = timedelta(minutes=10)  # 'cancelling' can last this long

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.sync_items_per_second <= 0:
            raise ValueError("sync_items_per_second must be positive")

    def sync_duration(self, items: int) -> timedelta:
        return timedelta(seconds=math.ceil(items / self.sync_items_per_second))


class RetryVerdict(str, enum.Enum):
    DONE = "done"  # terminal for good (succeeded, or a failure asking again cannot fix)
    RETRY = "retry"
    EXHAUSTED = "exhausted"  # worth retrying, but out of attempts


def retry_verdict(
    status: str, attempts: int, status_code: int | None, policy: LanePolicy, error_code: str | None = None
) -> RetryVerdict:
    """Whether an item in ``status`` after ``attempts`` attempts should be asked again."""
    kind = OutcomeKind(status)
    if kind is OutcomeKind.SUCCEEDED:
        return RetryVerdict.DONE
    if kind is OutcomeKind.INVALID_OUTPUT:
        limit = min(policy.max_attempts, policy.max_invalid_output_attempts)
        return RetryVerdict.RETRY if attempts < limit else RetryVerdict.EXHAUSTED
    if kind is OutcomeKind.FAILED:
        if not is_transient_failure(status_code, error_code):
            return RetryVerdict.DONE  # a 400-class refusal fails with the vendor's reason
    return RetryVerdict.RETRY if attempts < policy.max_attempts else RetryVerdict.EXHAUSTED


def batch_can_meet(deadline: datetime | None, now: datetime, policy: LanePolicy) -> bool:
    """Whether a batch submitted now finishes before the deadline even if it takes its whole window.

    Stricter than ``choose_call_lane``: it ignores the watchdog's rescue. Kept for callers that
    cannot be rescued (nothing watches their deadline).
    """
    return deadline is None or now + policy.batch_window + policy.safety_margin <= deadline


@dataclass(frozen=True, slots=True)
class LaneChoice:
    """The lane for a call or a group of calls, and why, in words a user can read."""

    lane: Lane
    reason: str
    warning: str | None = None  # set when even the sync lane cannot meet the deadline


def rescue_time(group_size: int, policy: LanePolicy, flush_wait: timedelta = timedelta(0)) -> timedelta:
    """How long before its deadline a group must be in a batch for the watchdog to still rescue it."""
    return policy.sync_duration(group_size) + policy.cancel_allowance + policy.safety_margin + flush_wait


def choose_call_lane(
    *,
    deadline: datetime | None,
    now: datetime,
    group_size: int,
    policy: LanePolicy,
    flush_wait: timedelta = timedelta(0),
    turnaround: TurnaroundEstimate | None = None,
) -> LaneChoice:
    """The lane that minimises the expected bill with no deadline missed, for ``group_size`` calls.

    - No deadline: the batch lane.
    - A deadline the sync lane itself cannot meet: the sync lane at once, with a warning.
    - A deadline that leaves the watchdog time to rescue (``rescue_time``): the batch lane, unless
      the learned ``turnaround`` says no batch of this model has ever ended in the time left
      before the watchdog would promote (then waiting only delays the same sync bill).
    - Otherwise the sync lane.
    ``flush_wait`` is how long the calls may still wait in the buffer before their batch is created.
    """
    if group_size < 1:
        raise ValueError("group_size must be at least 1")
    if flush_wait < timedelta(0):
        raise ValueError("flush_wait must not be negative")
    if deadline is None:
        return LaneChoice(Lane.BATCH, "No deadline: the batch lane's half price carries no risk.")
    if deadline.tzinfo is None or now.tzinfo is None:
        raise ValueError("deadline and now must be timezone-aware")
    left = deadline - now
    sync_needed = policy.sync_duration(group_size)
    if sync_needed > left:
        when = f"is {human_duration(left)} away" if left > timedelta(0) else f"passed {human_duration(-left)} ago"
        return LaneChoice(
            Lane.SYNC,
            f"The deadline {when}: running on the sync lane now.",
            warning=(
                f"{group_size} call(s) need about {human_duration(sync_needed)} on the sync lane "
                f"but the deadline {when}: they may finish late."
            ),
        )
    # The time a batch has to end before the watchdog would promote its calls.
    batch_time = left - rescue_time(group_size, policy, flush_wait)
    if batch_time <= timedelta(0):
        return LaneChoice(
            Lane.SYNC,
            f"The deadline is {human_duration(left)} away, too close for the watchdog to rescue a late batch "
            f"(it needs {human_duration(rescue_time(group_size, policy, flush_wait))}).",
        )
    if turnaround is not None and batch_time < turnaround.fastest:
        return LaneChoice(
            Lane.SYNC,
            f"A batch would have {human_duration(batch_time)} before promotion, but none of the last "
            f"{turnaround.batches_seen} batches of this model ended in under {human_duration(turnaround.fastest)}.",
        )
    if turnaround is not None:
        return LaneChoice(
            Lane.BATCH,
            f"A batch has {human_duration(batch_time)} before the watchdog would promote it, and batches of this "
            f"model end within {human_duration(turnaround.p90)} nine times in ten.",
        )
    return LaneChoice(
        Lane.BATCH,
        f"A batch has {human_duration(batch_time)} before the watchdog would promote it to the sync lane, "
        "which bills at most the sync price for what runs late.",
    )


def max_rescuable_calls(
    deadline: datetime, now: datetime, policy: LanePolicy, flush_wait: timedelta = timedelta(0)
) -> int:
    """The most calls one batch may hold so that the watchdog can still rescue all of them in time."""
    available = (deadline - now - flush_wait - policy.cancel_allowance - policy.safety_margin).total_seconds()
    if available <= 0:
        return 0
    # sync_duration(n) is whole seconds and must stay strictly under what is available.
    whole_seconds = math.ceil(available) - 1
    count = int(whole_seconds * policy.sync_items_per_second)
    while count > 0 and policy.sync_duration(count) >= timedelta(seconds=available):
        count -= 1
    while policy.sync_duration(count + 1) < timedelta(seconds=available):
        count += 1
    return count


def choose_retry_lane(
    remainder: int,
    deadline: datetime | None,
    now: datetime,
    policy: LanePolicy,
    turnaround: TurnaroundEstimate | None = None,
) -> Lane:
    """Small remainders go to the sync lane at once; the rest follow the call-site rule."""
    if remainder <= policy.sync_remainder_threshold:
        return Lane.SYNC
    return choose_call_lane(deadline=deadline, now=now, group_size=remainder, policy=policy, turnaround=turnaround).lane


def human_duration(duration: timedelta) -> str:
    """A duration as a person says it: '2 h 05 min', '43 min 20 s', '12 s'."""
    seconds = max(0, int(duration.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def deadline_at_risk(deadline: datetime | None, now: datetime, remaining: int, policy: LanePolicy) -> bool:
    """True once finishing the remaining items on the sync lane would only just make the deadline.

    The watchdog promotes at: now + sync time for the remainder + cancel allowance + margin >= deadline,
    so that even a batch whose cancellation takes its full ~10 minutes leaves time to finish.
    """
    if deadline is None or remaining <= 0:
        return False
    needed = policy.sync_duration(remaining) + policy.cancel_allowance + policy.safety_margin
    return now + needed >= deadline
