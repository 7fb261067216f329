"""Command-line parameter types and money formatting shared by the ``batch-pipelines`` commands."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

import click

from batch_pipelines.core.quantities import parse_duration, parse_fraction, parse_token_count

F = TypeVar("F", bound=Callable[..., Any])

CENT = Decimal("0.01")


def exact(value: Decimal) -> str:
    """An exact decimal string with at least cents: 112.5 -> '112.50', 0.000000375 stays whole."""
    value = value.normalize()
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        value = value.quantize(CENT)
    return format(value, "f")


def money(value: Decimal) -> str:
    """Display rounding only: the engine keeps exact decimals."""
    return f"${value.quantize(CENT, rounding=ROUND_HALF_UP):,}"


class TokenCount(click.ParamType[int]):
    name = "tokens"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_token_count(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Fraction(click.ParamType[Decimal]):
    name = "fraction"

    def __init__(self, upper_exclusive: Decimal | None = Decimal(1)) -> None:
        self.upper_exclusive = upper_exclusive

    def convert(self, value: Any, param: Any, ctx: Any) -> Decimal:
        try:
            return parse_fraction(value, name=param.name if param else "value", upper_exclusive=self.upper_exclusive)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Duration(click.ParamType[timedelta]):
    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def pricing_options(command: F) -> F:
    """The discount, price-book and output options that every pricing command (cost, advise) takes alike."""
    for option in reversed(
        [
            click.option(
                "--structural-discount",
                type=Fraction(),
                default="0",
                help="Negotiated discount in [0, 1), e.g. 0.15 or 15%.",
            ),
            click.option(
                "--credit-bonus",
                type=Fraction(upper_exclusive=None),
                default="0",
                help="Prepaid credit bonus b (cost / (1 + b)).",
            ),
            click.option(
                "--prices",
                type=click.Path(dir_okay=False),
                default=None,
                help="YAML price book laid over the default one.",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print one JSON object with decimal strings."),
        ]
    ):
        command = option(command)
    return command
