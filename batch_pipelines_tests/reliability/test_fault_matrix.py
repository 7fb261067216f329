"""The whole pipeline against one emulator fault profile per scenario, with the invariants checked.

Each scenario runs a small partition (20-60 items) through submit -> poll -> reconcile (with
retries) on the emulator's virtual clock and then asserts the invariants of ``pipeline``.
"""

from __future__ import annotations

import pytest

from batch_pipelines.core.lanes import RetryVerdict, retry_verdict
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.status import BatchStatus
from batch_pipelines_tests.reliability.conftest import with_profile
from batch_pipelines_tests.reliability.pipeline import (
    ANTHROPIC_MODEL,
    GEMINI_MODEL,
    OPENAI_MODEL,
    TEST_POLICY,
    assert_invariants,
    drive,
    emulator_cost,
    make_requests,
    run_partition,
    start,
    submit,
)


def _items(scenario):
    return {i.custom_id: i for i in scenario.gateway.ledger.iter_items(scenario.job, scenario.partition)}


def _assert_failures_are_final(scenario):
    """Every failed item either could not be fixed by asking again or ran out of attempts."""
    for item in _items(scenario).values():
        if item.status != "succeeded":
            verdict = retry_verdict(item.status, item.attempts, item.status_code, TEST_POLICY, item.error_code)
            assert verdict is not RetryVerdict.RETRY, (item.custom_id, item.status, item.attempts, item.status_code)


@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL, GEMINI_MODEL])
def test_mixed_item_errors(emu, vtime, gateway, model):
    """5% item errors of mixed kinds: 5xx/429 lines are retried to success, 400s fail with the vendor's reason."""
    with_profile(emu, item_error_rate=0.05, seed=11)
    scenario = run_partition(emu, gateway, vtime, make_requests(60, model=model))
    counts = assert_invariants(scenario)
    _assert_failures_are_final(scenario)
    items = _items(scenario).values()
    assert [i.status_code for i in items if i.status == "failed"] == [400] * counts.get("failed", 0)
    assert any(i.attempts == 2 and i.status == "succeeded" for i in items), "a transient line error was retried"


@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL, GEMINI_MODEL])
def test_expired_batch_harvests_partial_output(emu, vtime, gateway, model):
    """An expired batch with 30% unfinished: finished lines are kept, only the unfinished 30% are retried."""
    with_profile(emu, expire_rate=1.0, unfinished_at_expiry=0.3)
    scenario = start(emu, gateway, vtime, make_requests(40, model=model))
    submit(scenario)
    with_profile(emu)  # the retries (on the sync lane) meet no expiry
    drive(scenario, step_seconds=6 * 3600)
    counts = assert_invariants(scenario)
    assert counts == {"succeeded": 40}
    (batch,) = scenario.gateway.ledger.batches(scenario.job, scenario.partition)
    assert batch.status is BatchStatus.EXPIRED
    attempts = sorted(i.attempts for i in _items(scenario).values())
    assert attempts == [1] * 28 + [2] * 12, "the 28 lines the batch finished were not asked again"
    assert scenario.reports[0].retried_on_sync == 12


@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL, GEMINI_MODEL])
def test_cancel_in_flight(emu, vtime, gateway, model):
    """A batch cancelled by someone mid-run: what it finished is salvaged, the rest is retried once."""
    with_profile(emu, batch_completion_seconds=1000, cancel_seconds=600)
    scenario = start(emu, gateway, vtime, make_requests(40, model=model))
    submit(scenario)
    vtime.advance(505)  # validation (5 s) and about half the lines
    (row,) = gateway.ledger.batches(scenario.job, scenario.partition)
    gateway.client(row.provider).batch.cancel(row.vendor_batch_id)
    drive(scenario, step_seconds=300)
    counts = assert_invariants(scenario)
    assert counts == {"succeeded": 40}
    (batch,) = gateway.ledger.batches(scenario.job, scenario.partition)
    assert batch.status is BatchStatus.CANCELLED
    attempts = [i.attempts for i in _items(scenario).values()]
    assert 0 < attempts.count(1) < 40 and attempts.count(1) + attempts.count(2) == 40


@pytest.mark.parametrize("model", [OPENAI_MODEL, GEMINI_MODEL])
def test_all_lines_failed(emu, vtime, gateway, model):
    """Every line fails: 400s end failed with the vendor's reason, 5xx/429 are retried on the sync lane."""
    with_profile(emu, all_lines_fail=True, seed=5)
    scenario = run_partition(emu, gateway, vtime, make_requests(40, model=model))
    counts = assert_invariants(scenario)
    _assert_failures_are_final(scenario)
    items = _items(scenario).values()
    failed = [i for i in items if i.status == "failed"]
    assert failed and all(i.status_code == 400 and i.attempts == 1 for i in failed)
    assert counts["succeeded"] == 40 - len(failed) and all(i.attempts == 2 for i in items if i.status == "succeeded")


def test_token_limit_exceeded_delays_without_spending_attempts(emu, vtime, gateway):
    """token_limit_exceeded: the refused work is resubmitted smaller, spends no attempt and does not fail the
    partition."""
    requests = make_requests(40)
    with_profile(emu, enqueued_token_limits={OPENAI_MODEL: 900})
    scenario = start(emu, gateway, vtime, requests)
    submit(scenario)
    drive(scenario, step_seconds=600)
    counts = assert_invariants(scenario)
    assert counts == {"succeeded": 40}
    assert all(i.attempts == 1 for i in _items(scenario).values()), "a queue refusal spends no attempt"
    statuses = [b.status for b in gateway.ledger.batches(scenario.job, scenario.partition)]
    assert statuses.count(BatchStatus.FAILED) >= 1 and statuses.count(BatchStatus.COMPLETED) >= 2


@pytest.mark.parametrize("model", [OPENAI_MODEL, GEMINI_MODEL])
def test_missing_lines_are_retried(emu, vtime, gateway, model):
    """Lines absent from the output file become missing and are retried to success."""
    with_profile(emu, missing_line_rate=0.15, seed=3)
    scenario = run_partition(emu, gateway, vtime, make_requests(40, model=model))
    counts = assert_invariants(scenario)
    assert counts == {"succeeded": 40}
    assert any(i.attempts == 2 for i in _items(scenario).values())


def test_malformed_output_line(emu, vtime, gateway):
    """A line cut short in the output file is retried, and what the batch billed for it is still counted."""
    with_profile(emu, malformed_output_lines=2)
    scenario = run_partition(emu, gateway, vtime, make_requests(30))
    counts = assert_invariants(scenario)  # the ledger's cost includes the two unreadable lines
    assert counts == {"succeeded": 30}
    assert sorted(i.attempts for i in _items(scenario).values()) == [1] * 28 + [2] * 2


def test_malformed_output_line_anthropic_cost_gap_is_exactly_the_unreadable_lines(emu, vtime, gateway):
    """Anthropic reports no batch-level usage: the only cost the ledger cannot see is that of the cut lines."""
    with_profile(emu, malformed_output_lines=2)
    scenario = run_partition(emu, gateway, vtime, make_requests(30, model=ANTHROPIC_MODEL))
    assert assert_invariants(scenario, check_cost=False) == {"succeeded": 30}
    retried = [i for i in _items(scenario).values() if i.attempts == 2]
    assert len(retried) == 2
    # The emulator answers a request the same way on both lanes (short prompts: no cache), so a
    # cut line's usage is its sync retry's usage, priced at the batch rate.
    book = gateway.price_book
    unseen = sum(book.cost(ANTHROPIC_MODEL, i.usage, Lane.BATCH).cost_usd for i in retried)
    recorded = gateway.ledger.partition_totals(scenario.job, scenario.partition).cost_usd
    assert recorded + unseen == emulator_cost(scenario)


@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL, GEMINI_MODEL])
def test_429_bursts_and_5xx_on_every_route(emu, vtime, gateway, model):
    """5xx on file and batch routes, 429 bursts and 5xx on the sync lane: retried through, nothing lost or doubled."""
    with_profile(
        emu,
        route_5xx_rate=0.3,
        sync_429_burst=2,
        sync_5xx_rate=0.3,
        item_error_rate=0.2,
        item_error_kinds={"server_error_500": 1, "rate_limited_429": 1},
        seed=9,
    )
    scenario = run_partition(emu, gateway, vtime, make_requests(40, model=model))
    counts = assert_invariants(scenario)
    assert counts == {"succeeded": 40}


@pytest.mark.parametrize("model", [OPENAI_MODEL, GEMINI_MODEL])
def test_download_cut_mid_stream(emu, vtime, gateway, model):
    """A results download cut part-way resumes with Range and reconciles every line once."""
    with_profile(emu, download_drop_after_bytes=700)
    scenario = run_partition(emu, gateway, vtime, make_requests(40, model=model))
    counts = assert_invariants(scenario)
    assert counts == {"succeeded": 40}
    assert all(i.attempts == 1 for i in _items(scenario).values())


@pytest.mark.parametrize("model", [OPENAI_MODEL, GEMINI_MODEL])
def test_sync_retries_use_every_attempt_the_policy_allows(emu, vtime, gateway, model):
    """Items that keep failing 5xx on the sync lane are retried in the same run until max_attempts, then fail."""
    with_profile(emu, item_error_rate=0.3, item_error_kinds={"server_error_500": 1}, sync_5xx_rate=1.0, seed=4)
    scenario = run_partition(emu, gateway, vtime, make_requests(30, model=model))
    counts = assert_invariants(scenario, check_cost=False)
    _assert_failures_are_final(scenario)
    failed = [i for i in _items(scenario).values() if i.status == "failed"]
    assert failed and counts["failed"] == len(failed)
    assert {(i.attempts, i.status_code) for i in failed} == {(TEST_POLICY.max_attempts, 500)}


def test_gemini_full_queue_refuses_the_create_and_spends_no_attempt(emu, vtime, gateway):
    """Gemini refuses a create over the enqueued-token limit with 429: the work goes in smaller batches, no
    attempt spent."""
    with_profile(emu, enqueued_token_limits={GEMINI_MODEL: 900})
    scenario = start(emu, gateway, vtime, make_requests(40, model=GEMINI_MODEL))
    submit(scenario)
    drive(scenario, step_seconds=600)
    counts = assert_invariants(scenario)
    assert counts == {"succeeded": 40}
    assert all(i.attempts == 1 for i in _items(scenario).values()), "a queue refusal spends no attempt"
    statuses = [b.status for b in gateway.ledger.batches(scenario.job, scenario.partition)]
    assert len(statuses) >= 2 and set(statuses) == {BatchStatus.COMPLETED}, "the refused work went in pieces"


def test_gemini_malformed_output_line_is_retried(emu, vtime, gateway):
    """A Gemini result line cut short is retried; Gemini reports no batch usage totals, so like Anthropic
    the only cost the ledger cannot see is that of the cut lines."""
    with_profile(emu, malformed_output_lines=2)
    scenario = run_partition(emu, gateway, vtime, make_requests(30, model=GEMINI_MODEL))
    assert assert_invariants(scenario, check_cost=False) == {"succeeded": 30}
    retried = [i for i in _items(scenario).values() if i.attempts == 2]
    assert len(retried) == 2
    book = gateway.price_book
    unseen = sum(book.cost(GEMINI_MODEL, i.usage, Lane.BATCH).cost_usd for i in retried)
    recorded = gateway.ledger.partition_totals(scenario.job, scenario.partition).cost_usd
    assert recorded + unseen == emulator_cost(scenario)
