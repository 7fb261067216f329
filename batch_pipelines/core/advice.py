"""The lane advisor: a workload's traffic in, a verdict (batch, sync, or sync: not worth it) and the money out.

The batch lane halves the price of work nobody waits for. It saves nothing in four cases, and
the advice names which one applies:

- latency-bound work: a caller is blocked on the answer, so the batch rate is unavailable; the
  levers left (prompt caching, a structural discount) are priced for the workload instead;
- low volume: the monthly saving is below the threshold worth the plumbing (default $50);
- a tight deadline: shorter than the batch lane needs even with the deadline watchdog's rescue.
  The router's own rule (``core.lanes.choose_call_lane``) decides this, so the advisor and the
  router never disagree about a call;
- a tightly chained agent: N steps that feed each other need N batch turnarounds in a row; the
  advice says how many of them the chain's deadline leaves room for.

Pure: no I/O, no clock. The audit (``services.audit``) judges each group of a traffic log with
``judge_group`` from the same thresholds and words.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.core.lanes import LaneChoice, LanePolicy, choose_call_lane, human_duration
from batch_pipelines.core.pricing import NO_DISCOUNTS, Discounts, PriceBook
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.turnaround import TurnaroundEstimate
from batch_pipelines.core.usage import Usage

# A month of traffic is 30 days of it: the figure people compare with a monthly invoice.
DAYS_PER_MONTH = 30
DEFAULT_MIN_MONTHLY_SAVING = Decimal(50)
# The structural lever is priced per 10 points of negotiated discount on the list price.
STRUCTURAL_STEP = Decimal("0.10")
_ZERO = Decimal(0)
_CENT = Decimal("0.01")
# choose_call_lane compares instants; only their difference matters, so any fixed moment will do.
_REFERENCE = datetime(2000, 1, 1, tzinfo=UTC)


class Verdict(str, enum.Enum):
    BATCH = "batch"
    SYNC = "sync"
    NOT_WORTH_IT = "sync: not worth it"


class Case(str, enum.Enum):
    """Why the verdict is what it is."""

    BACKGROUND = "background"  # nobody waits and the deadline allows a batch: move it
    ALREADY_BATCHED = "already_batched"  # (audit) the movable work already runs on the batch lane
    LATENCY_BOUND = "latency_bound"
    LOW_VOLUME = "low_volume"
    NO_BATCH_DISCOUNT = "no_batch_discount"  # the price book gives the model no cheaper batch rate
    TIGHT_DEADLINE = "tight_deadline"
    CHAINED = "chained"


@dataclass(frozen=True, slots=True)
class Workload:
    """One workload's traffic: tokens per call, calls per day, and who waits for the answer.

    ``calls_per_day`` counts every call, each step of a chain included; ``deadline`` is how long
    after the call (for a chain: after its first step) the result is needed, None for no deadline.
    """

    model: str
    usage_per_call: Usage
    calls_per_day: Decimal
    blocked: bool
    deadline: timedelta | None = None
    chain_steps: int = 1

    def __post_init__(self) -> None:
        if not self.model:
            raise InvalidInputError("the workload needs a model")
        if not self.calls_per_day.is_finite() or self.calls_per_day < 0:
            raise InvalidInputError(f"calls per day must be a non-negative number, got {self.calls_per_day}")
        if self.chain_steps < 1:
            raise InvalidInputError(f"chain steps must be at least 1, got {self.chain_steps}")
        if self.deadline is not None and self.deadline <= timedelta(0):
            raise InvalidInputError(f"the deadline must be positive, got {self.deadline}")


@dataclass(frozen=True, slots=True)
class AdvicePolicy:
    """The advisor's thresholds, the account's discounts, and the router's lane policy."""

    min_monthly_saving: Decimal = DEFAULT_MIN_MONTHLY_SAVING
    discounts: Discounts = NO_DISCOUNTS
    lane_policy: LanePolicy = field(default_factory=LanePolicy)
    turnaround: TurnaroundEstimate | None = None  # what past batches of the model took, when known

    def __post_init__(self) -> None:
        if not self.min_monthly_saving.is_finite() or self.min_monthly_saving < 0:
            raise InvalidInputError(f"the monthly saving threshold must not be negative, got {self.min_monthly_saving}")


@dataclass(frozen=True, slots=True)
class LaneCost:
    """What the whole workload costs on one lane."""

    lane: Lane
    per_call: Decimal
    per_day: Decimal

    @property
    def per_month(self) -> Decimal:
        return self.per_day * DAYS_PER_MONTH


@dataclass(frozen=True, slots=True)
class Lever:
    """A saving still open when the batch lane is not: prompt caching, a structural discount."""

    name: str
    saving_per_month: Decimal
    note: str


@dataclass(frozen=True, slots=True)
class Advice:
    verdict: Verdict
    case: Case
    reason: str
    sync: LaneCost  # every call on the sync lane
    batch: LaneCost  # every call on the batch lane (what the rate would give, available or not)
    batchable_share: Decimal  # the fraction of the calls that may run on the batch lane
    saving_per_day: Decimal  # from moving the batchable share, whether or not it is worth it
    min_monthly_saving: Decimal
    break_even_calls_per_day: int | None  # calls a day at which the saving reaches the threshold
    levers: tuple[Lever, ...] = ()
    warning: str | None = None  # set when even the sync lane cannot meet the deadline

    @property
    def saving_per_month(self) -> Decimal:
        return self.saving_per_day * DAYS_PER_MONTH


def advise(workload: Workload, book: PriceBook, policy: AdvicePolicy = AdvicePolicy()) -> Advice:
    """The verdict for ``workload``: the lane, why, and the money on each lane."""
    sync_call = book.cost(workload.model, workload.usage_per_call, Lane.SYNC, policy.discounts).cost_usd
    batch_call = book.cost(workload.model, workload.usage_per_call, Lane.BATCH, policy.discounts).cost_usd
    sync = LaneCost(Lane.SYNC, sync_call, sync_call * workload.calls_per_day)
    batch = LaneCost(Lane.BATCH, batch_call, batch_call * workload.calls_per_day)
    saving_per_call = sync_call - batch_call

    def result(verdict: Verdict, case: Case, reason: str, share: Decimal, warning: str | None = None) -> Advice:
        levers = () if verdict is Verdict.BATCH else sync_levers(workload, book, policy.discounts)
        return Advice(
            verdict=verdict,
            case=case,
            reason=reason,
            sync=sync,
            batch=batch,
            batchable_share=share,
            saving_per_day=saving_per_call * share * workload.calls_per_day,
            min_monthly_saving=policy.min_monthly_saving,
            break_even_calls_per_day=break_even_calls_per_day(saving_per_call * share, policy.min_monthly_saving),
            levers=levers,
            warning=warning,
        )

    if workload.blocked:
        return result(
            Verdict.SYNC,
            Case.LATENCY_BOUND,
            "A caller is blocked on each answer: the batch lane (up to "
            f"{human_duration(policy.lane_policy.batch_window)}) is not available, so its rate is not either. "
            "The levers left are prompt caching and a structural discount.",
            _ZERO,
        )
    steps = workload.chain_steps
    if steps == 1:
        choice = single_call_lane(workload.deadline, policy.lane_policy, policy.turnaround)
        if choice.lane is Lane.SYNC:
            return result(Verdict.SYNC, Case.TIGHT_DEADLINE, choice.reason, _ZERO, choice.warning)
        share, lane_reason = Decimal(1), choice.reason
    else:
        batchable = batchable_chain_steps(steps, workload.deadline, policy.lane_policy, policy.turnaround)
        share = Decimal(batchable) / steps
        if batchable == 0:
            return result(Verdict.SYNC, Case.CHAINED, chain_reason(steps, 0, workload.deadline, policy), _ZERO)
        lane_reason = chain_reason(steps, batchable, workload.deadline, policy)
    monthly = saving_per_call * share * workload.calls_per_day * DAYS_PER_MONTH
    if saving_per_call <= 0:
        return result(
            Verdict.NOT_WORTH_IT,
            Case.NO_BATCH_DISCOUNT,
            f"The price book gives {workload.model} no cheaper rate on the batch lane: moving saves nothing.",
            share,
        )
    if monthly < policy.min_monthly_saving:
        return result(Verdict.NOT_WORTH_IT, Case.LOW_VOLUME, low_volume_reason(monthly, policy), share)
    if steps > 1:
        return result(Verdict.BATCH, Case.CHAINED, lane_reason, share)
    return result(Verdict.BATCH, Case.BACKGROUND, f"Nobody waits for the answer. {lane_reason}", share)


def single_call_lane(
    deadline: timedelta | None, lane_policy: LanePolicy, turnaround: TurnaroundEstimate | None = None
) -> LaneChoice:
    """The router's choice for one deferrable call due ``deadline`` after it is made."""
    due = None if deadline is None else _REFERENCE + deadline
    return choose_call_lane(deadline=due, now=_REFERENCE, group_size=1, policy=lane_policy, turnaround=turnaround)


@lru_cache(maxsize=64)
def shortest_batch_deadline(lane_policy: LanePolicy, turnaround: TurnaroundEstimate | None = None) -> timedelta:
    """The deadline at or below which the router sends one call to the sync lane, to the second.

    Found by asking ``choose_call_lane`` itself (its answer only turns from sync to batch as the
    deadline grows), so that a log of a million calls is classified with one vectorised
    comparison that agrees with the router call by call.
    """
    low, high = 0, 1
    while single_call_lane(timedelta(seconds=high), lane_policy, turnaround).lane is Lane.SYNC:
        low, high = high, high * 2
        if high > 10**9:
            raise InvalidInputError("the lane policy sends every deadline to the sync lane")
    while high - low > 1:  # sync at low (or low == 0), batch at high
        middle = (low + high) // 2
        if single_call_lane(timedelta(seconds=middle), lane_policy, turnaround).lane is Lane.SYNC:
            low = middle
        else:
            high = middle
    return timedelta(seconds=low)


@lru_cache(maxsize=4096)
def batchable_chain_steps(
    steps: int, deadline: timedelta | None, lane_policy: LanePolicy, turnaround: TurnaroundEstimate | None = None
) -> int:
    """How many of ``steps`` chained calls may each take a batch turnaround within the chain's deadline.

    Batched steps run one after another, so each gets an equal share of the time the sync steps
    leave; a step is batchable when the router would send a call due at the end of its share to
    the batch lane.
    """
    if deadline is None:
        return steps
    for batched in range(steps, 0, -1):
        sync_time = lane_policy.sync_duration(1) * (steps - batched)
        share = (deadline - sync_time) / batched
        if share > timedelta(0) and single_call_lane(share, lane_policy, turnaround).lane is Lane.BATCH:
            return batched
    return 0


def chain_reason(steps: int, batchable: int, deadline: timedelta | None, policy: AdvicePolicy) -> str:
    window = human_duration(policy.lane_policy.batch_window)
    head = f"{steps} chained steps feed each other: batching all of them means {steps} batch turnarounds in a row"
    if deadline is None:
        return f"{head} (up to {steps} x {window}); with no deadline that is acceptable, so all {steps} can be batched."
    if batchable == 0:
        return (
            f"{head}, and the chain's deadline of {human_duration(deadline)} leaves no step enough time for "
            "even one turnaround with the watchdog's rescue: run the chain on the sync lane."
        )
    if batchable == steps:
        return f"{head}; the chain's deadline of {human_duration(deadline)} leaves room for all {steps}."
    return (
        f"{head}; the chain's deadline of {human_duration(deadline)} leaves room for {batchable} of them "
        f"(each with about {human_duration(deadline / batchable)}); run the other {steps - batchable} on the sync lane."
    )


def low_volume_reason(monthly_saving: Decimal, policy: AdvicePolicy) -> str:
    return (
        f"Moving it saves {_dollars(monthly_saving)} a month, below the {_dollars(policy.min_monthly_saving)} "
        "a month worth the plumbing."
    )


def break_even_calls_per_day(saving_per_call: Decimal, min_monthly_saving: Decimal) -> int | None:
    """The calls a day at which the monthly saving reaches the threshold; None when it never does."""
    if saving_per_call <= 0:
        return None
    return max(1, math.ceil(min_monthly_saving / (saving_per_call * DAYS_PER_MONTH)))


def sync_levers(workload: Workload, book: PriceBook, discounts: Discounts) -> tuple[Lever, ...]:
    """What caching and a structural discount would save on the sync lane, per month."""
    calls_per_month = workload.calls_per_day * DAYS_PER_MONTH
    usage = workload.usage_per_call
    now = book.cost(workload.model, usage, Lane.SYNC, discounts).cost_usd
    all_cached = Usage(
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.input_tokens - usage.cache_write_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
    )
    cached = book.cost(workload.model, all_cached, Lane.SYNC, discounts).cost_usd
    levers = [
        Lever(
            "prompt caching",
            (now - cached) * calls_per_month,
            f"at most, if all {usage.uncached_input_tokens:,} uncached input tokens of a call were cache reads "
            "(only a stable prompt prefix of 1,024+ tokens caches)",
        )
    ]
    if discounts.structural + STRUCTURAL_STEP < 1:
        deeper = Discounts(discounts.structural + STRUCTURAL_STEP, discounts.credit_bonus)
        discounted = book.cost(workload.model, usage, Lane.SYNC, deeper).cost_usd
        levers.append(
            Lever(
                "structural discount",
                (now - discounted) * calls_per_month,
                f"per 10 more points of negotiated discount on the list price (now {discounts.structural:%})",
            )
        )
    return tuple(levers)


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """One group of a traffic log (a tag and a model), priced exactly, for ``judge_group``."""

    calls: int
    days: int  # the days the log spans (at least one)
    spend: Decimal  # what the calls cost on the lanes they ran on
    movable_calls: int  # background calls paid at the sync price whose deadline allows a batch
    movable_spend: Decimal
    movable_saving: Decimal  # what those calls would have saved on the batch lane
    batched_calls: int  # calls that already ran on the batch lane
    blocked_calls: int
    tight_calls: int
    chained_calls: int  # chain steps the chain's deadline leaves no turnaround for


def judge_group(figures: GroupFigures, policy: AdvicePolicy = AdvicePolicy()) -> tuple[Verdict, Case, str]:
    """The verdict for a group of logged calls, with the thresholds and words of ``advise``."""
    monthly = figures.movable_saving / max(1, figures.days) * DAYS_PER_MONTH
    if figures.movable_calls == 0:
        if figures.batched_calls and figures.batched_calls >= figures.calls - figures.batched_calls:
            return Verdict.BATCH, Case.ALREADY_BATCHED, "Its background work already runs on the batch lane."
        causes = [
            (figures.blocked_calls, Case.LATENCY_BOUND, "a caller is blocked on the answer"),
            (figures.tight_calls, Case.TIGHT_DEADLINE, "the deadline is too tight for a batch even with the rescue"),
            (figures.chained_calls, Case.CHAINED, "chained steps leave no time for another batch turnaround"),
        ]
        count, case, words = max(causes, key=lambda cause: cause[0])
        share = Decimal(count) / max(1, figures.calls - figures.batched_calls)
        return Verdict.SYNC, case, f"Batch saves nothing here: for {share:.0%} of the calls {words}."
    if figures.movable_saving <= 0:
        return Verdict.NOT_WORTH_IT, Case.NO_BATCH_DISCOUNT, "The model has no cheaper rate on the batch lane."
    if monthly < policy.min_monthly_saving:
        return Verdict.NOT_WORTH_IT, Case.LOW_VOLUME, low_volume_reason(monthly, policy)
    share = Decimal(figures.movable_calls) / max(1, figures.calls)
    return (
        Verdict.BATCH,
        Case.BACKGROUND,
        f"{share:.0%} of the calls are background work paid at the sync price; moving them saves "
        f"{_dollars(monthly)} a month.",
    )


def _dollars(amount: Decimal) -> str:
    return f"${amount.quantize(_CENT, rounding=ROUND_HALF_UP):,}"
