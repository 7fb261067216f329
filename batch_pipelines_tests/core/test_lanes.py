"""Lane decisions: retries, retry lanes and deadline risk, as plain tables."""

from datetime import UTC, datetime, timedelta

import pytest

from batch_pipelines.core.lanes import (
    LanePolicy,
    RetryVerdict,
    batch_can_meet,
    choose_retry_lane,
    deadline_at_risk,
    retry_verdict,
)
from batch_pipelines.core.requests import Lane

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
POLICY = LanePolicy(max_attempts=3, max_invalid_output_attempts=2, sync_remainder_threshold=100)


@pytest.mark.parametrize(
    ("status", "attempts", "code", "verdict"),
    [
        ("succeeded", 1, 200, RetryVerdict.DONE),
        ("failed", 1, 400, RetryVerdict.DONE),
        ("failed", 1, 404, RetryVerdict.DONE),
        ("failed", 1, 500, RetryVerdict.RETRY),
        ("failed", 1, 429, RetryVerdict.RETRY),
        ("failed", 3, 503, RetryVerdict.EXHAUSTED),
        ("expired", 1, None, RetryVerdict.RETRY),
        ("cancelled", 2, None, RetryVerdict.RETRY),
        ("missing", 3, None, RetryVerdict.EXHAUSTED),
        ("invalid_output", 1, 200, RetryVerdict.RETRY),
        ("invalid_output", 2, 200, RetryVerdict.EXHAUSTED),
    ],
)
def test_retry_verdict(status, attempts, code, verdict):
    """Transient and unfinished outcomes retry up to the limit; 400-class failures never do."""
    assert retry_verdict(status, attempts, code, POLICY) is verdict


@pytest.mark.parametrize(
    ("error_code", "verdict"),
    [
        ("connection_error", RetryVerdict.RETRY),
        ("timeout", RetryVerdict.RETRY),
        (None, RetryVerdict.DONE),
        ("invalid_json", RetryVerdict.DONE),
    ],
)
def test_failures_without_a_status_retry_only_when_the_vendor_was_not_reached(error_code, verdict):
    """A call that never reached the vendor may be retried; a failure with no status and another cause may not."""
    assert retry_verdict("failed", 1, None, POLICY, error_code) is verdict


@pytest.mark.parametrize(
    ("remainder", "deadline", "lane"),
    [
        (5, None, Lane.SYNC),
        (100, NOW + timedelta(days=3), Lane.SYNC),
        (101, NOW + timedelta(days=3), Lane.BATCH),
        (101, None, Lane.BATCH),
        (5000, NOW + timedelta(hours=6), Lane.SYNC),
    ],
)
def test_retry_lane(remainder, deadline, lane):
    """A small remainder or a deadline inside the batch window sends retries to the sync lane."""
    assert choose_retry_lane(remainder, deadline, NOW, POLICY) is lane


def test_batch_can_meet_needs_the_whole_window_plus_margin():
    """A batch is trusted only if its full 24 h window and the margin fit before the deadline."""
    assert batch_can_meet(NOW + timedelta(hours=24, minutes=30), NOW, POLICY)
    assert not batch_can_meet(NOW + timedelta(hours=24, minutes=29), NOW, POLICY)


def test_deadline_risk_counts_sync_time_cancel_allowance_and_margin():
    """1,000 items at 5/s need 200 s; with 10 min cancel and 30 min margin the risk starts 43m20s before."""
    deadline = NOW + timedelta(minutes=43, seconds=20)
    assert deadline_at_risk(deadline, NOW, 1000, POLICY)
    assert not deadline_at_risk(deadline + timedelta(seconds=1), NOW, 1000, POLICY)
    assert not deadline_at_risk(None, NOW, 1000, POLICY)
    assert not deadline_at_risk(deadline, NOW, 0, POLICY)
