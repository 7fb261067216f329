"""The lane advisor: one verdict per case, the money exact, and the router's lane rule shared."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from batch_pipelines.core.advice import (
    AdvicePolicy,
    Case,
    GroupFigures,
    Verdict,
    Workload,
    advise,
    batchable_chain_steps,
    judge_group,
)
from batch_pipelines.core.errors import InvalidInputError, UnknownModelError
from batch_pipelines.core.lanes import LanePolicy, choose_call_lane
from batch_pipelines.core.pricing import Discounts, PriceBook
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.usage import Usage

BOOK = PriceBook.default()
CALL = Usage(input_tokens=2_000, output_tokens=300)  # gpt-5.4-mini: $0.00285 sync, $0.001425 batch a call


def workload(**changes) -> Workload:
    fields = {
        "model": "gpt-5.4-mini",
        "usage_per_call": CALL,
        "calls_per_day": Decimal(50_000),
        "blocked": False,
        "deadline": timedelta(hours=6),
        "chain_steps": 1,
    }
    fields.update(changes)
    return Workload(**fields)


# (name, workload changes, verdict, case, batchable share)
CASES = [
    ("background", {}, Verdict.BATCH, Case.BACKGROUND, Decimal(1)),
    ("no deadline", {"deadline": None}, Verdict.BATCH, Case.BACKGROUND, Decimal(1)),
    ("latency-bound", {"blocked": True}, Verdict.SYNC, Case.LATENCY_BOUND, Decimal(0)),
    ("low volume", {"calls_per_day": Decimal(500)}, Verdict.NOT_WORTH_IT, Case.LOW_VOLUME, Decimal(1)),
    ("tight deadline", {"deadline": timedelta(minutes=20)}, Verdict.SYNC, Case.TIGHT_DEADLINE, Decimal(0)),
    (
        "chain, some steps",
        {"chain_steps": 5, "deadline": timedelta(hours=2)},
        Verdict.BATCH,
        Case.CHAINED,
        Decimal("0.4"),
    ),
    ("chain, none", {"chain_steps": 5, "deadline": timedelta(minutes=30)}, Verdict.SYNC, Case.CHAINED, Decimal(0)),
    ("chain, no deadline", {"chain_steps": 5, "deadline": None}, Verdict.BATCH, Case.CHAINED, Decimal(1)),
]


@pytest.mark.parametrize(("name", "changes", "verdict", "case", "share"), CASES, ids=[c[0] for c in CASES])
def test_verdict_table(name, changes, verdict, case, share):
    """Every row of the case table gets its verdict, its case and the share of calls the batch lane may take."""
    advice = advise(workload(**changes), BOOK)
    assert (advice.verdict, advice.case, advice.batchable_share) == (verdict, case, share)
    assert advice.reason


def test_background_work_money_per_day_month_saving_and_break_even():
    """Background work: batch, with exact costs per lane, the saving, and the break-even at the threshold."""
    advice = advise(workload(), BOOK)
    assert advice.verdict is Verdict.BATCH
    assert advice.sync.per_call == Decimal("0.00285")
    assert advice.batch.per_call == Decimal("0.001425")
    assert advice.sync.per_day == Decimal("142.50")
    assert advice.batch.per_month == Decimal("2137.50")
    assert advice.saving_per_day == Decimal("71.25")
    assert advice.saving_per_month == Decimal("2137.50")
    # $50 / ($0.001425 x 30) = 1169.6 -> 1,170 calls a day
    assert advice.break_even_calls_per_day == 1170
    assert advice.levers == ()


def test_latency_bound_work_prices_the_caching_and_structural_levers():
    """A blocked caller: sync, no saving from batch, and what caching and 10 points of discount would save."""
    advice = advise(workload(blocked=True), BOOK)
    assert advice.verdict is Verdict.SYNC and advice.case is Case.LATENCY_BOUND
    assert "blocked" in advice.reason
    assert advice.saving_per_month == 0
    assert advice.break_even_calls_per_day is None
    levers = {lever.name: lever.saving_per_month for lever in advice.levers}
    # 2,000 input tokens at $0.75/M -> cache reads at $0.075/M: $0.00135 a call, 1.5M calls a month
    assert levers["prompt caching"] == Decimal("2025.00")
    # 10% of the $0.00285 sync call, 1.5M calls a month
    assert levers["structural discount"] == Decimal("427.50")


def test_low_volume_is_not_worth_it_below_the_threshold_and_the_threshold_is_configurable():
    """500 calls a day save $21.38 a month: not worth it at $50, worth it at a $20 threshold."""
    small = workload(calls_per_day=Decimal(500))
    default = advise(small, BOOK)
    assert default.verdict is Verdict.NOT_WORTH_IT and default.case is Case.LOW_VOLUME
    assert default.saving_per_month == Decimal("21.375")
    assert "$21.38" in default.reason and "$50.00" in default.reason
    lower = advise(small, BOOK, AdvicePolicy(min_monthly_saving=Decimal(20)))
    assert lower.verdict is Verdict.BATCH


def test_tight_deadline_follows_the_router_lane_rule_exactly():
    """The advisor says sync exactly where the router's choose_call_lane sends one call to the sync lane."""
    policy = LanePolicy()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    for minutes in (1, 10, 30, 40, 41, 45, 90, 600):
        deadline = timedelta(minutes=minutes)
        router = choose_call_lane(deadline=now + deadline, now=now, group_size=1, policy=policy)
        advice = advise(workload(deadline=deadline), BOOK)
        assert (advice.verdict is Verdict.BATCH) == (router.lane is Lane.BATCH), minutes
        if router.lane is Lane.SYNC:
            assert advice.case is Case.TIGHT_DEADLINE
            assert advice.reason == router.reason


def test_a_deadline_even_sync_cannot_meet_carries_the_router_warning():
    """A 1-second deadline for a call: sync, with the router's warning that it may finish late."""
    advice = advise(workload(deadline=timedelta(milliseconds=500)), BOOK)
    assert advice.verdict is Verdict.SYNC and advice.warning is not None


def test_chained_agent_says_how_many_steps_the_chain_deadline_allows():
    """5 chained steps due in 2 h: 2 batch turnarounds fit (1 h each), the other 3 run on sync."""
    advice = advise(workload(chain_steps=5, deadline=timedelta(hours=2)), BOOK)
    assert advice.case is Case.CHAINED
    assert "5 batch turnarounds in a row" in advice.reason
    assert "room for 2 of them" in advice.reason
    assert advice.saving_per_day == Decimal("71.25") * Decimal("0.4")


def test_chained_steps_each_get_a_share_the_router_would_batch():
    """The batchable count is the largest k whose equal share of the deadline the router sends to batch."""
    policy = LanePolicy()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    for hours in (0.5, 1, 2, 5, 24):
        deadline = timedelta(hours=hours)
        k = batchable_chain_steps(8, deadline, policy)
        if k:
            share = (deadline - policy.sync_duration(1) * (8 - k)) / k
            assert choose_call_lane(deadline=now + share, now=now, group_size=1, policy=policy).lane is Lane.BATCH
        if k < 8:
            more = (deadline - policy.sync_duration(1) * (8 - k - 1)) / (k + 1)
            assert choose_call_lane(deadline=now + more, now=now, group_size=1, policy=policy).lane is Lane.SYNC


def test_a_model_without_a_batch_discount_is_not_worth_it():
    """A price book whose batch rate equals the sync rate: not worth it, and it says why."""
    flat = {"models": {"flat-model": {"sync": {"input": "1", "output": "2"}, "batch": {"input": "1", "output": "2"}}}}
    advice = advise(workload(model="flat-model"), PriceBook.default(flat))
    assert advice.verdict is Verdict.NOT_WORTH_IT and advice.case is Case.NO_BATCH_DISCOUNT
    assert advice.break_even_calls_per_day is None


def test_discounts_stack_into_the_lane_costs():
    """A 15% structural discount and a 25% credit bonus apply to both lanes, in the documented order."""
    policy = AdvicePolicy(discounts=Discounts(Decimal("0.15"), Decimal("0.25")))
    advice = advise(workload(), BOOK, policy)
    assert advice.sync.per_call == Decimal("0.00285") * Decimal("0.85") / Decimal("1.25")
    assert advice.batch.per_call == Decimal("0.001425") * Decimal("0.85") / Decimal("1.25")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"calls_per_day": Decimal(-1)}, "calls per day"),
        ({"chain_steps": 0}, "chain steps"),
        ({"deadline": timedelta(0)}, "deadline"),
    ],
)
def test_bad_workloads_are_refused_with_the_problem_named(changes, words):
    """Negative calls, zero chain steps and a zero deadline are refused, naming the field."""
    with pytest.raises(InvalidInputError, match=words):
        workload(**changes)


def test_an_unknown_model_is_refused():
    """A model the price book does not know raises UnknownModelError listing the known ones."""
    with pytest.raises(UnknownModelError):
        advise(workload(model="no-such-model"), BOOK)


GROUP = GroupFigures(
    calls=1000,
    days=1,
    spend=Decimal(10),
    movable_calls=0,
    movable_spend=Decimal(0),
    movable_saving=Decimal(0),
    batched_calls=0,
    blocked_calls=0,
    tight_calls=0,
    chained_calls=0,
)


@pytest.mark.parametrize(
    ("changes", "verdict", "case"),
    [
        ({"blocked_calls": 900, "tight_calls": 100}, Verdict.SYNC, Case.LATENCY_BOUND),
        ({"tight_calls": 1000}, Verdict.SYNC, Case.TIGHT_DEADLINE),
        ({"chained_calls": 600, "blocked_calls": 400}, Verdict.SYNC, Case.CHAINED),
        ({"movable_calls": 10, "movable_saving": Decimal(1)}, Verdict.NOT_WORTH_IT, Case.LOW_VOLUME),
        ({"movable_calls": 500, "movable_saving": Decimal(5)}, Verdict.BATCH, Case.BACKGROUND),
        ({"batched_calls": 1000}, Verdict.BATCH, Case.ALREADY_BATCHED),
    ],
)
def test_group_verdicts_use_the_advisor_cases(changes, verdict, case):
    """A logged group's verdict names the dominant reason batch saves nothing, or what moving saves a month."""
    from dataclasses import replace

    assert judge_group(replace(GROUP, **changes))[:2] == (verdict, case)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("45m", 2700), ("2h", 7200), ("1h30m", 5400), ("1d", 86400)]
)
def test_durations_parse(text, seconds):
    """Durations with d/h/m/s parts parse to their seconds."""
    from batch_pipelines.core.quantities import parse_duration

    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "soon", "2x", "0", "-1h", "h"])
def test_bad_durations_are_refused(text):
    """Text that is no positive duration raises ValueError."""
    from batch_pipelines.core.quantities import parse_duration

    with pytest.raises(ValueError):
        parse_duration(text)
