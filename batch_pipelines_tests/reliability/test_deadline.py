"""The deadline watchdog on the virtual clock: promote in time, salvage without paying twice."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from batch_pipelines.core.status import BatchStatus
from batch_pipelines_tests.reliability.conftest import with_profile
from batch_pipelines_tests.reliability.pipeline import (
    GEMINI_MODEL,
    OPENAI_MODEL,
    assert_invariants,
    build_gateway,
    make_requests,
    start,
    submit,
    tick,
)

STEP = 300  # the deadline sensor's tick, in virtual seconds


def _watch_until_complete(scenario, max_ticks=200):
    """Completion sensor, then deadline sensor, every STEP; promote when the watchdog says so.

    Returns the watchdog's actions and the virtual time at which every item first had a
    terminal outcome.
    """
    gw = scenario.gateway
    actions = []
    all_terminal_at = None
    for _ in range(max_ticks):
        complete = tick(scenario)
        if not complete:
            for action in gw.watch_deadlines(scenario.job):
                actions.append(action)
                if action.run_on_sync_now:
                    gw.promote(scenario.job, scenario.partition, rebuild_requests=scenario.rebuild)
        counts = gw.ledger.item_counts(scenario.job, scenario.partition)
        if all_terminal_at is None and not counts.get("pending") and not counts.get("submitted"):
            all_terminal_at = scenario.vtime.datetime()
        if complete:
            return actions, all_terminal_at
        scenario.vtime.advance(STEP)
    raise AssertionError("never completed")


@pytest.mark.parametrize("model", [OPENAI_MODEL, GEMINI_MODEL])
def test_slow_batch_is_cancelled_in_time_and_salvaged(emu, vtime, tmp_path, model):
    """A batch that would end after the deadline is cancelled early; finished lines are kept, not paid twice."""
    with_profile(emu, batch_completion_seconds=6 * 3600, cancel_seconds=600)
    gateway = build_gateway(emu, tmp_path, vtime)
    deadline = vtime.datetime() + timedelta(hours=2)
    scenario = start(emu, gateway, vtime, make_requests(40, model=model, deadline=deadline))
    submit(scenario)
    actions, done_at = _watch_until_complete(scenario)
    assert actions and not any(a.run_on_sync_now for a in actions), "there was time to wait for the cancellation"
    assert done_at <= deadline and vtime.datetime() <= deadline, "every outcome landed before the deadline"
    (batch,) = gateway.ledger.batches(scenario.job, scenario.partition)
    assert batch.status is BatchStatus.CANCELLED
    assert assert_invariants(scenario) == {"succeeded": 40}
    items = list(gateway.ledger.iter_items(scenario.job, scenario.partition))
    finished_by_batch = [i for i in items if i.attempts == 1]
    assert 0 < len(finished_by_batch) < 40, "the batch had finished some lines before the cancel"
    groups = gateway.ledger.attempt_groups(scenario.job, scenario.partition)
    assert sum((g.cost_usd for g in groups if g.superseded), Decimal(0)) == 0, "no finished line paid for twice"


@pytest.mark.parametrize("model", [OPENAI_MODEL, GEMINI_MODEL])
def test_no_time_to_wait_runs_on_sync_and_records_the_duplicate(emu, vtime, tmp_path, model):
    """Too late to wait for the cancel: items run on the sync lane at once and the batch's late answers are recorded."""
    with_profile(emu, batch_completion_seconds=1200, cancel_seconds=600)
    gateway = build_gateway(emu, tmp_path, vtime)
    deadline = vtime.datetime() + timedelta(minutes=30)
    scenario = start(emu, gateway, vtime, make_requests(40, model=model, deadline=deadline))
    submit(scenario)
    vtime.advance(STEP)  # the batch answers about a quarter of its lines before the watchdog looks
    actions, done_at = _watch_until_complete(scenario)
    assert actions[0].run_on_sync_now
    assert done_at <= deadline, "every outcome landed before the deadline"
    items = {i.custom_id: i for i in gateway.ledger.iter_items(scenario.job, scenario.partition)}
    assert all(i.status == "succeeded" and i.batch_key.startswith("promo-") for i in items.values())
    assert assert_invariants(scenario) == {"succeeded": 40}  # the cost check includes the duplicates
    groups = gateway.ledger.attempt_groups(scenario.job, scenario.partition)
    paid_twice = sum((g.cost_usd for g in groups if g.superseded), Decimal(0))
    assert paid_twice > 0, "the batch's answers for promoted items are recorded, not hidden"
    assert scenario.last.paid_twice_usd == paid_twice


def test_a_batch_that_cannot_be_cancelled_is_promoted_at_once(emu, vtime, tmp_path):
    """Every cancel fails (5xx on every route): the watchdog still acts, asking for the sync lane now,
    and the partition meets its deadline."""
    with_profile(emu, batch_completion_seconds=6 * 3600)
    gateway = build_gateway(emu, tmp_path, vtime)
    deadline = vtime.datetime() + timedelta(hours=2)
    scenario = start(emu, gateway, vtime, make_requests(10, model=OPENAI_MODEL, deadline=deadline))
    submit(scenario)
    with_profile(emu, batch_completion_seconds=6 * 3600, route_5xx_rate=1.0)
    actions = []
    while not actions and vtime.datetime() < deadline:
        vtime.advance(STEP)
        actions = gateway.watch_deadlines(scenario.job)
    (action,) = actions
    assert action.run_on_sync_now and action.cancel_requested == ()
    with_profile(emu, batch_completion_seconds=6 * 3600)
    assert gateway.promote(scenario.job, scenario.partition, rebuild_requests=scenario.rebuild) == 10
    counts = gateway.ledger.item_counts(scenario.job, scenario.partition)
    assert counts == {"succeeded": 10} and vtime.datetime() <= deadline
