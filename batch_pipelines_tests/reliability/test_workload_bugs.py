"""A bug in the workload's parser fails the run loudly and is never paid for again.

Only ``InvalidOutput`` means "the model's answer broke the contract" (retried); a ``KeyError``
in ``parse_response`` is a bug: the run stops naming the item and the traceback, no item is
bought again, and once the code is fixed the partition completes from what was already paid.
"""

from __future__ import annotations

import pytest

from batch_pipelines.core.errors import InvalidOutput, WorkloadError
from batch_pipelines_tests.reliability.conftest import with_profile
from batch_pipelines_tests.reliability.pipeline import (
    OPENAI_MODEL,
    assert_invariants,
    drive,
    make_requests,
    start,
    submit,
)


def buggy_parser(response: dict) -> dict:
    return {"label": response["no_such_key"]}  # the workload's bug: a KeyError on every answer


def fixed_parser(response: dict) -> dict:
    return {"label": response["choices"][0]["message"]["content"]}


def _wait_until_ended(scenario) -> None:
    for _ in range(20):
        scenario.gateway.poll(scenario.job)
        if scenario.gateway.progress(scenario.job, scenario.partition).ready_for_results:
            return
        scenario.vtime.advance(3600)
    raise AssertionError("the batch never ended")


def test_a_parser_bug_on_batch_answers_stops_the_run_and_buys_nothing(emu, vtime, gateway):
    """KeyError in parse_response: WorkloadError naming the item and traceback; no new batch, no sync call;
    after the fix the same batch is collected and every item succeeds at exactly the price paid once."""
    with_profile(emu)
    scenario = start(emu, gateway, vtime, make_requests(8, model=OPENAI_MODEL))
    submit(scenario)
    _wait_until_ended(scenario)
    before = emu.stats()
    with pytest.raises(WorkloadError) as caught:
        gateway.reconcile(
            scenario.job, scenario.partition, rebuild_requests=scenario.rebuild, parse_response=buggy_parser
        )
    error = caught.value
    assert error.details["custom_id"].startswith("item-") and error.details["exception"] == "KeyError"
    assert "no_such_key" in error.details["traceback"] and "buggy_parser" in error.details["traceback"]
    after = emu.stats()
    assert after["sync_requests"] == before["sync_requests"]
    assert after["batches_created"] == before["batches_created"]
    assert gateway.ledger.item_counts(scenario.job, scenario.partition).get("invalid_output", 0) == 0

    drive(scenario, parse_response=fixed_parser)
    assert assert_invariants(scenario) == {"succeeded": 8}
    assert emu.stats()["sync_requests"] == before["sync_requests"]


def test_a_parser_bug_on_sync_answers_records_what_was_paid_and_buys_nothing_again(emu, vtime, gateway):
    """Items retried on the sync lane hit the bug: each answer is recorded once (failed, workload_error),
    the run raises WorkloadError, and another results run sends nothing."""
    with_profile(emu, item_error_rate=1.0, item_error_kinds={"server_error_500": 1})
    scenario = start(emu, gateway, vtime, make_requests(5, model=OPENAI_MODEL))
    submit(scenario)
    _wait_until_ended(scenario)
    before = emu.stats()["sync_requests"]
    with pytest.raises(WorkloadError, match="5 paid answer\\(s\\) recorded as failed"):
        gateway.reconcile(
            scenario.job, scenario.partition, rebuild_requests=scenario.rebuild, parse_response=buggy_parser
        )
    assert emu.stats()["sync_requests"] == before + 5
    items = list(gateway.ledger.iter_items(scenario.job, scenario.partition))
    assert {(i.status, i.error_code) for i in items} == {("failed", "workload_error")}
    report = gateway.reconcile(
        scenario.job, scenario.partition, rebuild_requests=scenario.rebuild, parse_response=buggy_parser
    )
    scenario.reports.append(report)
    assert report.complete and emu.stats()["sync_requests"] == before + 5
    assert_invariants(scenario)


def test_invalid_output_is_still_an_answer_to_ask_again(emu, vtime, gateway):
    """InvalidOutput (now part of the error tree) keeps meaning 'bad answer': the item is retried, not a bug."""
    with_profile(emu)
    calls: dict[str, int] = {}

    def picky(response: dict) -> dict:
        content = response["choices"][0]["message"]["content"]
        calls[content] = calls.get(content, 0) + 1
        if calls[content] == 1:
            raise InvalidOutput("first answer refused")
        return {"label": content}

    scenario = start(emu, gateway, vtime, make_requests(3, model=OPENAI_MODEL))
    submit(scenario)
    drive(scenario, parse_response=picky)
    assert assert_invariants(scenario) == {"succeeded": 3}
    assert emu.stats()["sync_requests"] > 0  # the refused answers were asked again
