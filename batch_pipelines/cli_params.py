"""Command-line parameter types and money formatting shared by the ``batch-pipelines`` commands."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import click

from batch_pipelines.core.quantities import parse_duration, parse_fraction, parse_token_count

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
