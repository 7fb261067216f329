"""``batch-pipelines advise``: one workload in, a lane verdict with its reason and money out."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import click
import orjson

from batch_pipelines.cli_params import CENT, Duration, Fraction, TokenCount, exact, money, pricing_options
from batch_pipelines.core.advice import (
    DEFAULT_MIN_MONTHLY_SAVING,
    Advice,
    AdvicePolicy,
    LaneCost,
    Workload,
    advise,
)
from batch_pipelines.core.errors import BatchPipelinesError
from batch_pipelines.core.pricing import Discounts, PriceBook
from batch_pipelines.core.usage import Usage

_MICRO = Decimal("0.000001")


@click.command("advise")
@click.option("--model", required=True, help="Model name from the price book.")
@click.option("--input-tokens", type=TokenCount(), required=True, help="Prompt tokens per call (2k, 1.5M).")
@click.option("--output-tokens", type=TokenCount(), required=True, help="Completion tokens per call.")
@click.option("--cached-input-tokens", type=TokenCount(), default=0, help="Part of the input read from a prompt cache.")
@click.option("--calls-per-day", type=TokenCount(), required=True, help="Calls a day, every chain step counted (50k).")
@click.option(
    "--blocked", type=click.Choice(["yes", "no"]), required=True, help="Is a caller blocked on each response?"
)
@click.option("--deadline", type=Duration(), default=None, help="How long after the call its result is needed (6h).")
@click.option(
    "--chain-steps", type=click.IntRange(min=1, max=1000), default=1, help="Chained steps that feed each other."
)
@click.option(
    "--min-monthly-saving",
    type=Fraction(upper_exclusive=None),
    default=str(DEFAULT_MIN_MONTHLY_SAVING),
    show_default=True,
    help="USD a month below which moving to batch is not worth the plumbing.",
)
@pricing_options
def advise_command(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int,
    calls_per_day: int,
    blocked: str,
    deadline: timedelta | None,
    chain_steps: int,
    min_monthly_saving: Decimal,
    structural_discount: Decimal,
    credit_bonus: Decimal,
    prices: str | None,
    as_json: bool,
) -> None:
    """Should this workload run on the batch lane? The verdict, the reason and the money."""
    try:
        usage = Usage(input_tokens=input_tokens, cached_input_tokens=cached_input_tokens, output_tokens=output_tokens)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        book = PriceBook.default(prices)
        workload = Workload(
            model=model,
            usage_per_call=usage,
            calls_per_day=Decimal(calls_per_day),
            blocked=blocked == "yes",
            deadline=deadline,
            chain_steps=chain_steps,
        )
        policy = AdvicePolicy(
            min_monthly_saving=min_monthly_saving, discounts=Discounts(structural_discount, credit_bonus)
        )
        advice = advise(workload, book, policy)
    except BatchPipelinesError as exc:
        raise click.UsageError(exc.message) from None
    if as_json:
        click.echo(orjson.dumps(advice_json(workload, advice)).decode())
    else:
        _print_advice(workload, advice)


def advice_json(workload: Workload, advice: Advice) -> dict[str, Any]:
    """The advice as JSON: money as exact decimal strings."""

    def lane(cost: LaneCost) -> dict[str, str]:
        return {"per_call": exact(cost.per_call), "per_day": exact(cost.per_day), "per_month": exact(cost.per_month)}

    return {
        "model": workload.model,
        "verdict": advice.verdict.value,
        "case": advice.case.value,
        "reason": advice.reason,
        "warning": advice.warning,
        "calls_per_day": str(workload.calls_per_day),
        "sync": lane(advice.sync),
        "batch": lane(advice.batch),
        "batchable_share": str(advice.batchable_share),
        "saving_per_day": exact(advice.saving_per_day),
        "saving_per_month": exact(advice.saving_per_month),
        "min_monthly_saving": exact(advice.min_monthly_saving),
        "break_even_calls_per_day": advice.break_even_calls_per_day,
        "levers": [
            {"lever": lever.name, "saving_per_month": exact(lever.saving_per_month), "note": lever.note}
            for lever in advice.levers
        ],
    }


def _print_advice(workload: Workload, advice: Advice) -> None:
    u = workload.usage_per_call
    click.echo(
        f"model {workload.model}: {u.input_tokens:,} input ({u.cached_input_tokens:,} cached) + "
        f"{u.output_tokens:,} output tokens a call, {workload.calls_per_day:,} calls a day"
    )
    click.echo(f"{'lane':<8}{'per call':>14}{'per day':>14}{'per month':>14}")
    for cost in (advice.sync, advice.batch):
        per_call = f"${cost.per_call.quantize(_MICRO, rounding=ROUND_HALF_UP)}"
        click.echo(f"{cost.lane.value:<8}{per_call:>14}{money(cost.per_day):>14}{money(cost.per_month):>14}")
    click.echo(f"verdict: {advice.verdict.value}")
    click.echo(f"reason: {advice.reason}")
    if advice.warning:
        click.echo(f"warning: {advice.warning}")
    share = (advice.batchable_share * 100).quantize(CENT, rounding=ROUND_HALF_UP)
    click.echo(
        f"saving: {money(advice.saving_per_day)} a day, {money(advice.saving_per_month)} a month "
        f"({share}% of the calls on the batch lane)"
    )
    if advice.break_even_calls_per_day is None:
        click.echo("break-even: never (the batch lane saves nothing on these calls)")
    else:
        click.echo(
            f"break-even: {advice.break_even_calls_per_day:,} calls a day save "
            f"{money(advice.min_monthly_saving)} a month"
        )
    for lever in advice.levers:
        click.echo(f"lever {lever.name}: {money(lever.saving_per_month)} a month, {lever.note}")
