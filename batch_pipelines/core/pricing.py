"""The cost engine: exact Decimal prices and the stacking order of discounts.

Stacking order (DESIGN.md, PRICES.md): structural rate -> batch discount -> cache-read
multiplier on cached input -> prepaid credit bonus. The lane's rates already hold the batch
discount and the cache-read rate explicitly (vendors differ), so the arithmetic is:

    rates      = book[model][lane] * (1 - structural_discount)
    raw        = uncached_input*rates.input + cached*rates.cache_read
                 + cache_write*rates.cache_write + output*rates.output      (per 1M tokens)
    cost       = raw / (1 + credit_bonus)

Nothing is rounded here: rounding happens only where a number is shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from batch_pipelines.core.config_files import load_yaml_file
from batch_pipelines.core.errors import ConfigError, UnknownModelError
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.tokens import ENCODINGS, encoding_for_model
from batch_pipelines.core.usage import Usage

MILLION = Decimal(1_000_000)
ZERO = Decimal(0)
DEFAULT_PRICE_BOOK_PATH = Path(__file__).resolve().parent.parent / "prices.yaml"
_RATE_FIELDS = ("input", "output", "cache_read", "cache_write")
# Costs in tables are whole femto-dollars (1e-15 USD): the scale of their decimal128(38, 15)
# columns. Every rate of the shipped book is a whole number of femto-dollars per token.
COST_SCALE = 15
COST_QUANTUM = Decimal(1).scaleb(-COST_SCALE)
_FEMTO_PER_MILLION = Decimal(1).scaleb(COST_SCALE - 6)  # femto-dollars per token, per USD per 1M tokens
USAGE_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per 1M tokens for one lane of one model."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal

    def scaled(self, factor: Decimal) -> Rates:
        return Rates(self.input * factor, self.output * factor, self.cache_read * factor, self.cache_write * factor)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    model: str
    provider: str
    kind: str  # "chat" or "embedding"
    sync: Rates
    batch: Rates
    encoding: str | None = None  # the tokenizer's encoding, when the model's name does not tell it

    def rates(self, lane: Lane) -> Rates:
        return self.batch if lane is Lane.BATCH else self.sync


@dataclass(frozen=True, slots=True)
class Discounts:
    """Account-level terms that apply on top of the list price, in either lane."""

    structural: Decimal = ZERO  # negotiated or pass-through discount, a fraction in [0, 1)
    credit_bonus: Decimal = ZERO  # prepaid bonus b: each credit dollar buys (1 + b) of usage

    def __post_init__(self) -> None:
        if not (ZERO <= self.structural < 1):
            raise ConfigError(f"structural discount must be in [0, 1), got {self.structural}")
        if self.credit_bonus < 0:
            raise ConfigError(f"credit bonus must not be negative, got {self.credit_bonus}")


NO_DISCOUNTS = Discounts()


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """A cost in the chosen lane beside what the same usage would cost on the sync lane."""

    model: str
    lane: Lane
    usage: Usage
    cost_usd: Decimal
    sync_equivalent_usd: Decimal

    @property
    def savings_usd(self) -> Decimal:
        return self.sync_equivalent_usd - self.cost_usd

    @property
    def savings_pct(self) -> Decimal:
        if self.sync_equivalent_usd == 0:
            return ZERO
        return self.savings_usd / self.sync_equivalent_usd * 100


def _decimal(value: Any, where: str) -> Decimal:
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ConfigError(f"price book: {where} is not a number: {value!r}") from None
    if not result.is_finite() or result < 0:
        raise ConfigError(f"price book: {where} must be a finite, non-negative number, got {value!r}")
    return result


def _rates(raw: Any, where: str) -> Rates:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"price book: {where} must be a mapping of {', '.join(_RATE_FIELDS)}")
    missing = [f for f in ("input", "output") if f not in raw]
    if missing:
        raise ConfigError(f"price book: {where} lacks {', '.join(missing)}")
    unknown = sorted(set(raw) - set(_RATE_FIELDS))
    if unknown:
        raise ConfigError(f"price book: {where} has unknown fields {', '.join(unknown)}")
    input_rate = _decimal(raw["input"], f"{where}.input")
    return Rates(
        input=input_rate,
        output=_decimal(raw["output"], f"{where}.output"),
        # Absent cache rates default to the industry norm: reads at 0.1x, writes at 1x input.
        cache_read=_decimal(raw.get("cache_read", input_rate / 10), f"{where}.cache_read"),
        cache_write=_decimal(raw.get("cache_write", input_rate), f"{where}.cache_write"),
    )


def _model_price(model: str, raw: Any) -> ModelPrice:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"price book: model {model!r} must be a mapping with sync and batch rates")
    for lane in ("sync", "batch"):
        if lane not in raw:
            raise ConfigError(f"price book: model {model!r} has no {lane!r} rates")
    kind = str(raw.get("kind", "chat"))
    if kind not in ("chat", "embedding"):
        raise ConfigError(f"price book: model {model!r} has kind {kind!r}; use 'chat' or 'embedding'")
    encoding = raw.get("encoding")
    if encoding is not None and encoding not in ENCODINGS:
        raise ConfigError(f"price book: model {model!r} has encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    return ModelPrice(
        model=model,
        provider=str(raw.get("provider", "unknown")),
        kind=kind,
        sync=_rates(raw["sync"], f"{model}.sync"),
        batch=_rates(raw["batch"], f"{model}.batch"),
        encoding=encoding,
    )


class PriceBook:
    """Per-model rates for both lanes; prices usage exactly."""

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices = dict(prices)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "price book") -> PriceBook:
        if not isinstance(data, Mapping) or not isinstance(data.get("models"), Mapping):
            raise ConfigError(f"{source}: expected a top-level 'models:' mapping")
        return cls({str(m): _model_price(str(m), raw) for m, raw in data["models"].items()})

    @classmethod
    def load(cls, path: str | Path) -> PriceBook:
        path = Path(path)
        data = load_yaml_file(path, "price book")
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def default(cls, overrides: str | Path | Mapping[str, Any] | None = None) -> PriceBook:
        """The shipped book, with a user's file or mapping laid over it model by model."""
        book = cls.load(DEFAULT_PRICE_BOOK_PATH)
        if overrides is None:
            return book
        extra = cls.load(overrides) if isinstance(overrides, (str, Path)) else cls.from_mapping(overrides)
        return book.merged(extra)

    def merged(self, other: PriceBook) -> PriceBook:
        return PriceBook({**self._prices, **other._prices})

    @property
    def models(self) -> list[str]:
        return sorted(self._prices)

    def __contains__(self, model: str) -> bool:
        return model in self._prices

    def price(self, model: str) -> ModelPrice:
        try:
            return self._prices[model]
        except KeyError:
            raise UnknownModelError(model, list(self._prices)) from None

    def encoding(self, model: str) -> str:
        """The tokenizer encoding for ``model``: the book's, else the one its name implies."""
        price = self._prices.get(model)
        return price.encoding if price is not None and price.encoding else encoding_for_model(model)

    def cost(
        self,
        model: str,
        usage: Usage,
        lane: Lane = Lane.BATCH,
        discounts: Discounts = NO_DISCOUNTS,
    ) -> CostBreakdown:
        price = self.price(model)
        return CostBreakdown(
            model=model,
            lane=lane,
            usage=usage,
            cost_usd=_priced(price.rates(lane), usage, discounts),
            sync_equivalent_usd=_priced(price.sync, usage, discounts),
        )

    def cost_columns(
        self,
        model: str,
        usage: Mapping[str, IntArray],
        lane: Lane = Lane.BATCH,
        discounts: Discounts = NO_DISCOUNTS,
    ) -> tuple[IntArray, IntArray]:
        """``cost`` over whole columns of usage: (cost, sync-equivalent cost) in femto-dollars per row.

        ``usage`` maps each of ``USAGE_FIELDS`` but reasoning to an int64 array. When every rate
        (after the discounts) is a whole number of femto-dollars per token, the sum is integer
        arithmetic and exact; otherwise each row goes through ``cost`` and is rounded half-even
        to the femto-dollar, as a cost is when it is stored.
        """
        price = self.price(model)
        out = []
        for rates in (price.rates(lane), price.sync):
            units = _femto_rates(rates, discounts)
            if units is not None and _fits_int64(units, usage):
                uncached = usage["input_tokens"] - usage["cached_input_tokens"] - usage["cache_write_tokens"]
                out.append(
                    uncached * units[0]
                    + usage["cached_input_tokens"] * units[1]
                    + usage["cache_write_tokens"] * units[2]
                    + usage["output_tokens"] * units[3]
                )
            else:
                out.append(np.array([_femto(_priced(rates, u, discounts)) for u in _usage_rows(usage)], dtype=object))
        return out[0], out[1]

    def total(
        self, items: Iterable[tuple[str, Usage, Lane]], discounts: Discounts = NO_DISCOUNTS
    ) -> tuple[Decimal, Decimal]:
        """Sum of (cost, sync-equivalent cost) over (model, usage, lane) triples."""
        cost = sync = ZERO
        for model, usage, lane in items:
            breakdown = self.cost(model, usage, lane, discounts)
            cost += breakdown.cost_usd
            sync += breakdown.sync_equivalent_usd
        return cost, sync


def _priced(rates: Rates, usage: Usage, discounts: Discounts) -> Decimal:
    r = rates.scaled(1 - discounts.structural)
    raw = (
        usage.uncached_input_tokens * r.input
        + usage.cached_input_tokens * r.cache_read
        + usage.cache_write_tokens * r.cache_write
        + usage.output_tokens * r.output
    ) / MILLION
    return raw / (1 + discounts.credit_bonus)


def _femto(cost: Decimal) -> int:
    return int(cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN).scaleb(COST_SCALE))


def _femto_rates(rates: Rates, discounts: Discounts) -> tuple[int, int, int, int] | None:
    """Rates as whole femto-dollars per token, or None when one has more digits than that."""
    scale = (1 - discounts.structural) / (1 + discounts.credit_bonus)
    out = []
    for rate in (rates.input, rates.cache_read, rates.cache_write, rates.output):
        femto = rate * scale * _FEMTO_PER_MILLION
        if femto != femto.to_integral_value():
            return None
        out.append(int(femto))
    return out[0], out[1], out[2], out[3]


def _fits_int64(units: tuple[int, ...], usage: Mapping[str, IntArray]) -> bool:
    """Whether the integer sum cannot overflow int64 for these columns (else the exact path runs)."""
    biggest = max((int(column.max()) for column in usage.values() if len(column)), default=0)
    return biggest * sum(units) < 2**62


def _usage_rows(usage: Mapping[str, IntArray]) -> Iterable[Usage]:
    columns = [usage[name].tolist() for name in USAGE_FIELDS if name != "reasoning_tokens"]
    for inputs, cached, written, output in zip(*columns):
        yield Usage(input_tokens=inputs, cached_input_tokens=cached, cache_write_tokens=written, output_tokens=output)
