"""Lane decisions: retries, call and retry lanes, deadline risk and turnaround, as plain tables."""

from datetime import UTC, datetime, timedelta

import pytest

from batch_pipelines.core.lanes import (
    LanePolicy,
    RetryVerdict,
    batch_can_meet,
    choose_call_lane,
    choose_retry_lane,
    deadline_at_risk,
    max_rescuable_calls,
    rescue_time,
    retry_verdict,
)
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.turnaround import MIN_BATCHES_FOR_ESTIMATE, TurnaroundEstimate

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
        (5000, NOW + timedelta(hours=6), Lane.BATCH),
        (5000, NOW + timedelta(minutes=56), Lane.SYNC),
        (5000, NOW + timedelta(minutes=57), Lane.BATCH),
    ],
)
def test_retry_lane(remainder, deadline, lane):
    """A small remainder, or a deadline too close for the watchdog to rescue a batch, sends retries to sync."""
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


M = timedelta(minutes=1)
# 1,000 calls at 5/s take 200 s on the sync lane; + 10 min cancel + 30 min margin = 43 min 20 s of rescue.
RESCUE_1000 = timedelta(minutes=43, seconds=20)


def _turnaround(fastest: timedelta) -> TurnaroundEstimate:
    return TurnaroundEstimate(
        batches_seen=40, fastest=fastest, median=fastest * 2, p90=fastest * 3, slowest=fastest * 4
    )


@pytest.mark.parametrize(
    ("deadline", "group", "flush_wait", "turnaround", "lane", "warned"),
    [
        (None, 1, timedelta(0), None, Lane.BATCH, False),
        (None, 1_000_000, timedelta(hours=1), None, Lane.BATCH, False),
        (NOW + timedelta(hours=2), 1000, timedelta(0), None, Lane.BATCH, False),
        (NOW + RESCUE_1000 + timedelta(seconds=1), 1000, timedelta(0), None, Lane.BATCH, False),
        (NOW + RESCUE_1000, 1000, timedelta(0), None, Lane.SYNC, False),
        (NOW + RESCUE_1000 + 15 * M, 1000, 15 * M, None, Lane.SYNC, False),
        (NOW + RESCUE_1000 + 16 * M, 1000, 15 * M, None, Lane.BATCH, False),
        (NOW + timedelta(seconds=200), 1000, timedelta(0), None, Lane.SYNC, False),
        (NOW + timedelta(seconds=199), 1000, timedelta(0), None, Lane.SYNC, True),
        (NOW - M, 1, timedelta(0), None, Lane.SYNC, True),
        (NOW + timedelta(hours=6), 100_000, timedelta(0), None, Lane.SYNC, False),
        (NOW + timedelta(hours=7), 100_000, timedelta(0), None, Lane.BATCH, False),
        (NOW + timedelta(hours=2), 1000, timedelta(0), _turnaround(timedelta(hours=3)), Lane.SYNC, False),
        (NOW + timedelta(hours=2), 1000, timedelta(0), _turnaround(10 * M), Lane.BATCH, False),
        (NOW + timedelta(days=3), 1000, timedelta(0), _turnaround(timedelta(hours=3)), Lane.BATCH, False),
    ],
)
def test_call_lane(deadline, group, flush_wait, turnaround, lane, warned):
    """Batch whenever the watchdog can still rescue; sync when it cannot; a warning only when even sync is late."""
    choice = choose_call_lane(
        deadline=deadline, now=NOW, group_size=group, policy=POLICY, flush_wait=flush_wait, turnaround=turnaround
    )
    assert choice.lane is lane
    assert (choice.warning is not None) is warned
    assert choice.reason.endswith(".")


def test_call_lane_earns_the_discount_inside_the_batch_window():
    """A call due in 2 h goes to the batch lane, which the whole-window rule would have refused."""
    deadline = NOW + timedelta(hours=2)
    assert not batch_can_meet(deadline, NOW, POLICY)
    assert choose_call_lane(deadline=deadline, now=NOW, group_size=1, policy=POLICY).lane is Lane.BATCH


def test_call_lane_warning_says_what_is_late():
    """The warning names the call count and the time the sync lane needs, or that the deadline passed."""
    choice = choose_call_lane(deadline=NOW + timedelta(seconds=100), now=NOW, group_size=1000, policy=POLICY)
    assert choice.warning is not None and "1000 call(s)" in choice.warning and "3 min 20 s" in choice.warning
    passed = choose_call_lane(deadline=NOW - timedelta(minutes=5), now=NOW, group_size=1, policy=POLICY)
    assert passed.warning is not None and "passed 5 min 00 s ago" in passed.warning


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_size": 0}, "group_size"),
        ({"flush_wait": -M}, "flush_wait"),
        ({"deadline": datetime(2026, 11, 28, 12)}, "timezone-aware"),
    ],
)
def test_call_lane_refuses_bad_arguments(kwargs, message):
    """An empty group, a negative flush wait or a naive deadline is an error naming the argument."""
    arguments = {"deadline": NOW + timedelta(hours=1), "now": NOW, "group_size": 1, "policy": POLICY} | kwargs
    with pytest.raises(ValueError, match=message):
        choose_call_lane(**arguments)


def test_rescue_time_adds_sync_time_cancel_margin_and_flush_wait():
    """The rescue time is sync time for the group + cancel allowance + margin + flush wait."""
    assert rescue_time(1000, POLICY) == RESCUE_1000
    assert rescue_time(1000, POLICY, 15 * M) == RESCUE_1000 + 15 * M


@pytest.mark.parametrize(
    ("deadline", "flush_wait", "expected"),
    [
        (NOW + RESCUE_1000 + timedelta(seconds=1), timedelta(0), 1000),
        (NOW + RESCUE_1000, timedelta(0), 995),
        (NOW + timedelta(minutes=40), timedelta(0), 0),
        (NOW + timedelta(minutes=40, seconds=1), timedelta(0), 0),
        (NOW + timedelta(minutes=40, milliseconds=1500), timedelta(0), 5),
        (NOW + timedelta(hours=2), 15 * M, 19_495),
    ],
)
def test_max_rescuable_calls(deadline, flush_wait, expected):
    """The largest batch whose rescue still fits before the deadline."""
    assert max_rescuable_calls(deadline, NOW, POLICY, flush_wait) == expected


@pytest.mark.parametrize("minutes", [41, 43, 60, 90, 240, 24 * 60])
def test_max_rescuable_calls_is_where_the_call_lane_turns(minutes):
    """A group of max_rescuable_calls goes to batch; one call more goes to sync."""
    deadline = NOW + timedelta(minutes=minutes)
    most = max_rescuable_calls(deadline, NOW, POLICY)
    assert choose_call_lane(deadline=deadline, now=NOW, group_size=most, policy=POLICY).lane is Lane.BATCH
    assert choose_call_lane(deadline=deadline, now=NOW, group_size=most + 1, policy=POLICY).lane is Lane.SYNC


def test_turnaround_needs_enough_batches():
    """Fewer batches than the minimum give no estimate; enough give nearest-rank quantiles."""
    few = [timedelta(minutes=m) for m in range(1, MIN_BATCHES_FOR_ESTIMATE)]
    assert TurnaroundEstimate.from_durations(few) is None
    estimate = TurnaroundEstimate.from_durations(timedelta(minutes=m) for m in range(20, 0, -1))
    assert estimate == TurnaroundEstimate(batches_seen=20, fastest=M, median=10 * M, p90=18 * M, slowest=20 * M)


def test_turnaround_refuses_unordered_quantiles():
    """Quantiles out of order are a programming error, named as such."""
    with pytest.raises(ValueError, match="ordered"):
        TurnaroundEstimate(batches_seen=3, fastest=10 * M, median=5 * M, p90=20 * M, slowest=30 * M)
