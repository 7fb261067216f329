"""Lane decisions: where a retry goes, and when a deadline forces the sync lane. Pure functions.

The batch lane is half price but may take up to its whole window (24 h); the sync lane is full
price and as fast as the rate limits allow. Every decision here compares the time the batch
lane may still need against the deadline, with a safety margin, and prefers the batch lane
whenever it can still make it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from batch_pipelines.core.outcomes import OutcomeKind, is_transient_failure
from batch_pipelines.core.requests import Lane


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
    """Whether a batch submitted now finishes before the deadline even if it takes its whole window."""
    return deadline is None or now + policy.batch_window + policy.safety_margin <= deadline


def choose_retry_lane(remainder: int, deadline: datetime | None, now: datetime, policy: LanePolicy) -> Lane:
    """Small remainders and tight deadlines go to the sync lane; the rest wait for a new batch."""
    if remainder <= policy.sync_remainder_threshold:
        return Lane.SYNC
    return Lane.BATCH if batch_can_meet(deadline, now, policy) else Lane.SYNC


def deadline_at_risk(deadline: datetime | None, now: datetime, remaining: int, policy: LanePolicy) -> bool:
    """True once finishing the remaining items on the sync lane would only just make the deadline.

    The watchdog promotes at: now + sync time for the remainder + cancel allowance + margin >= deadline,
    so that even a batch whose cancellation takes its full ~10 minutes leaves time to finish.
    """
    if deadline is None or remaining <= 0:
        return False
    needed = policy.sync_duration(remaining) + policy.cancel_allowance + policy.safety_margin
    return now + needed >= deadline
