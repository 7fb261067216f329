"""The buffer's flush decision and the cut of a flush into parts, as plain tables."""

from datetime import UTC, datetime, timedelta

import pytest

from batch_pipelines.core.flush import FlushPolicy, WaitingCall, WaitingGroup, flush_due, plan_flush
from batch_pipelines.core.lanes import LanePolicy, max_rescuable_calls
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.turnaround import TurnaroundEstimate

NOW = datetime(2026, 12, 2, 8, tzinfo=UTC)
M = timedelta(minutes=1)
H = timedelta(hours=1)
LANES = LanePolicy()  # 5 calls/s on sync, 10 min cancel allowance, 30 min margin
FLUSH = FlushPolicy(max_calls=10_000, max_age=15 * M)
TURNAROUND = TurnaroundEstimate(batches_seen=50, fastest=5 * M, median=30 * M, p90=2 * H, slowest=6 * H)


def _group(waiting: int, age: timedelta, deadline: timedelta | None) -> WaitingGroup:
    return WaitingGroup(
        provider="openai",
        model="gpt-5.4-mini",
        endpoint="/v1/chat/completions",
        waiting=waiting,
        oldest=NOW - age,
        earliest_deadline=None if deadline is None else NOW + deadline,
    )


@pytest.mark.parametrize(
    ("waiting", "age", "deadline", "turnaround", "due", "says"),
    [
        (0, 20 * M, None, None, False, "Nothing"),
        (9_999, 14 * M, None, None, False, "flushes at 10000 calls"),
        (10_000, 0 * M, None, None, True, "size threshold"),
        (3, 15 * M, None, None, True, "age threshold"),
        (3, 1 * M, 40 * M, None, True, "sync lane now"),
        (3, 1 * M, 54 * M, None, True, "no time to rescue"),
        (3, 1 * M, 56 * M, None, False, "flushes at"),
        (3, 1 * M, 3 * H, None, False, "flushes at"),
        (3, 1 * M, 150 * M, TURNAROUND, True, "comfortable"),
        (3, 1 * M, 4 * H, TURNAROUND, False, "flushes at"),
    ],
)
def test_flush_due(waiting, age, deadline, turnaround, due, says):
    """Size, age, or a deadline that cannot wait for the age threshold makes a group due."""
    decision = flush_due(
        _group(waiting, age, deadline), now=NOW, flush_policy=FLUSH, lane_policy=LANES, turnaround=turnaround
    )
    assert decision.due is due
    assert says in decision.reason


def test_flush_policy_refuses_nonsense():
    """A zero size threshold, a negative age or an empty lease is refused when the policy is made."""
    with pytest.raises(ValueError, match="max_calls"):
        FlushPolicy(max_calls=0)
    with pytest.raises(ValueError, match="max_age"):
        FlushPolicy(max_age=-M)
    with pytest.raises(ValueError, match="claim_lease"):
        FlushPolicy(claim_lease=timedelta(0))


def test_plan_sends_hopeless_and_tight_deadlines_to_sync_with_warnings_only_for_hopeless():
    """A passed deadline runs on sync with a warning; a tight one on sync without; the rest batch."""
    calls = [
        WaitingCall("late", NOW - M),
        WaitingCall("tight", NOW + 20 * M),
        WaitingCall("later", NOW + 5 * H),
        WaitingCall("free", None),
    ]
    parts = plan_flush(calls, now=NOW, lane_policy=LANES)
    assert [(p.lane, p.call_ids) for p in parts] == [
        (Lane.SYNC, ("late", "tight")),
        (Lane.BATCH, ("later",)),
        (Lane.BATCH, ("free",)),
    ]
    assert set(parts[0].warnings) == {"late"}
    assert parts[0].earliest_deadline == NOW - M


def test_plan_bands_deadlines_so_a_late_one_never_waits_on_an_early_one():
    """Deadlines 1 h, 1.5 h, 3 h and 30 h away make three batches: [1 h, 1.5 h], [3 h], [30 h]."""
    calls = [
        WaitingCall("c", NOW + 3 * H),
        WaitingCall("a", NOW + 1 * H),
        WaitingCall("d", NOW + 30 * H),
        WaitingCall("b", NOW + 90 * M),
    ]
    parts = plan_flush(calls, now=NOW, lane_policy=LANES)
    assert [p.call_ids for p in parts] == [("a", "b"), ("c",), ("d",)]
    assert all(p.lane is Lane.BATCH for p in parts)
    assert [p.earliest_deadline for p in parts] == [NOW + H, NOW + 3 * H, NOW + 30 * H]


def test_plan_caps_a_band_at_what_the_watchdog_can_rescue():
    """A band never holds more calls than can run on sync between promotion and its earliest deadline."""
    deadline = NOW + 50 * M
    most = max_rescuable_calls(deadline, NOW, LANES)
    calls = [WaitingCall(f"c{i:05d}", deadline) for i in range(most * 2 + 1)]
    parts = plan_flush(calls, now=NOW, lane_policy=LANES)
    assert [len(p.call_ids) for p in parts] == [most, most, 1]
    assert sorted(i for p in parts for i in p.call_ids) == sorted(c.call_id for c in calls)


def test_plan_keeps_every_call_exactly_once():
    """Whatever the mix, every call lands in exactly one part."""
    calls = [WaitingCall(f"c{i}", None if i % 3 == 0 else NOW + (i % 7) * 37 * M) for i in range(200)]
    parts = plan_flush(calls, now=NOW, lane_policy=LANES, turnaround=TURNAROUND)
    placed = [i for p in parts for i in p.call_ids]
    assert sorted(placed) == sorted(c.call_id for c in calls)
