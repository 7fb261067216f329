"""Parsing of human-written quantities: token counts with suffixes, fractions."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
MAX_TOKEN_COUNT = 10**15
"""A quadrillion tokens: far past any workload, and small enough that every cost stays exact."""
MAX_DURATION_SECONDS = 10 * 366 * 86_400
"""Ten years: past any deadline or window, and well inside what ``timedelta`` holds."""
MAX_UNBOUNDED_FRACTION = Decimal(10**12)
"""The ceiling of a quantity with no natural one (a credit bonus, dollars a month): every sum
stays inside Decimal's 28 digits with cents to spare."""
_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMbB]?)\s*$")


def parse_token_count(text: str) -> int:
    """'30M' -> 30_000_000, '500k' -> 500_000, '1.5m' -> 1_500_000; negatives are refused."""
    match = _COUNT.match(str(text).replace("_", "").replace(",", ""))
    if not match:
        raise ValueError(f"{text!r} is not a token count (a whole number, optionally with k, M or B: 500k, 30M)")
    number, suffix = Decimal(match.group(1)), _SUFFIXES[match.group(2).lower()]
    value = number * suffix
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of tokens")
    if value > MAX_TOKEN_COUNT:
        raise ValueError(f"{_shorten(text)} tokens is more than {MAX_TOKEN_COUNT:,}; is a digit too many?")
    return int(value)


def _shorten(text: str) -> str:
    text = str(text)
    return repr(text) if len(text) <= 40 else f"a {len(text)}-character count"


def parse_fraction(text: str, *, name: str, upper_exclusive: Decimal | None = Decimal(1)) -> Decimal:
    """A decimal in [0, upper); '15%' is accepted as 0.15."""
    raw = str(text).strip()
    try:
        value = Decimal(raw[:-1]) / 100 if raw.endswith("%") else Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{name} {text!r} is not a number") from None
    upper = upper_exclusive if upper_exclusive is not None else MAX_UNBOUNDED_FRACTION
    if not value.is_finite() or value < 0 or value >= upper:
        raise ValueError(f"{name} must be in [0, {upper:,}), got {_shorten(text)}")
    return value


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|min|m|s)", re.IGNORECASE)
_DURATION_UNITS = {"d": 86_400, "h": 3_600, "min": 60, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """'2h' -> 2 hours, '1h30m' -> 90 minutes, '45s', '1.5d'; a bare number is seconds; zero is refused."""
    raw = str(text).strip().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        seconds = float(raw)
    else:
        parts = _DURATION_PART.findall(raw)
        if not parts or "".join(n + u for n, u in parts).lower() != raw.lower():
            raise ValueError(f"{text!r} is not a duration (e.g. 90s, 45m, 2h, 1h30m, 1d)")
        seconds = sum(float(number) * _DURATION_UNITS[unit.lower()] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{_shorten(text)} is longer than ten years; is a digit too many?")
    return timedelta(seconds=seconds)
