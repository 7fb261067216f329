"""The nightly invoice: one day's spend from the ledger, beside what it would have cost all on the sync lane.

A day is the 24 hours from midnight UTC; an attempt belongs to the day its outcome was recorded
(when the vendor's bill for it is final). Per workload (the ledger job; the router's deferred
calls are job ``deferred``), lane and model: attempts, tokens, cost and the sync-equivalent cost.
Then the extra money and where it went:

- promotions: the sync premium over the batch price on attempts the deadline watchdog moved to
  the sync lane, plus answers paid twice (a promotion raced its batch and both finished);
- retries: the sync premium on retry attempts that ran on the sync lane, plus attempts billed
  for an answer that was not used (failed, invalid output) and so was asked again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.usage import Usage
from batch_pipelines.ledger import Ledger
from batch_pipelines.ledger.deferred import DEFERRED_JOB
from batch_pipelines.ledger.rows import SpendGroup

ROUTER_WORKLOAD = "router (deferred calls)"
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    workload: str
    lane: Lane
    model: str
    attempts: int
    usage: Usage
    cost_usd: Decimal
    sync_equivalent_usd: Decimal

    @property
    def savings_usd(self) -> Decimal:
        return self.sync_equivalent_usd - self.cost_usd


@dataclass(frozen=True, slots=True)
class Invoice:
    day: date
    lines: tuple[InvoiceLine, ...]
    promotion_extra_usd: Decimal
    paid_twice_usd: Decimal  # part of promotion_extra_usd
    retry_extra_usd: Decimal
    promoted_attempts: int
    retry_attempts: int

    @property
    def cost_usd(self) -> Decimal:
        return sum((line.cost_usd for line in self.lines), _ZERO)

    @property
    def sync_equivalent_usd(self) -> Decimal:
        return sum((line.sync_equivalent_usd for line in self.lines), _ZERO)

    @property
    def savings_usd(self) -> Decimal:
        return self.sync_equivalent_usd - self.cost_usd

    @property
    def savings_pct(self) -> Decimal:
        return self.savings_usd / self.sync_equivalent_usd * 100 if self.sync_equivalent_usd else _ZERO

    @property
    def attempts(self) -> int:
        return sum(line.attempts for line in self.lines)

    def by_lane(self) -> dict[Lane, Decimal]:
        totals: dict[Lane, Decimal] = {}
        for line in self.lines:
            totals[line.lane] = totals.get(line.lane, _ZERO) + line.cost_usd
        return totals

    def by_workload(self) -> dict[str, tuple[Decimal, Decimal]]:
        """workload -> (cost, sync-equivalent cost)."""
        totals: dict[str, tuple[Decimal, Decimal]] = {}
        for line in self.lines:
            cost, sync = totals.get(line.workload, (_ZERO, _ZERO))
            totals[line.workload] = (cost + line.cost_usd, sync + line.sync_equivalent_usd)
        return totals


def day_window(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def workload_name(job: str) -> str:
    return ROUTER_WORKLOAD if job == DEFERRED_JOB else job


def build_invoice(ledger: Ledger, book: PriceBook, day: date) -> Invoice:
    """The invoice of ``day`` (UTC) from what the ledger recorded."""
    start, end = day_window(day)
    return invoice_from_groups(day, ledger.spend_between(start, end), book)


def invoice_from_groups(day: date, groups: list[SpendGroup], book: PriceBook) -> Invoice:
    lines: dict[tuple[str, Lane, str], InvoiceLine] = {}
    promotion_extra = paid_twice = retry_extra = _ZERO
    promoted = retries = 0
    for group in groups:
        key = (workload_name(group.job), group.lane, group.model)
        line = lines.get(key)
        lines[key] = InvoiceLine(
            workload=key[0],
            lane=group.lane,
            model=group.model,
            attempts=group.attempts + (line.attempts if line else 0),
            usage=group.usage + line.usage if line else group.usage,
            cost_usd=group.cost_usd + (line.cost_usd if line else _ZERO),
            sync_equivalent_usd=group.sync_equivalent_usd + (line.sync_equivalent_usd if line else _ZERO),
        )
        # The price the batch lane would have charged for the same usage: the premium is above it.
        sync_premium = group.cost_usd - book.cost(group.model, group.usage, Lane.BATCH).cost_usd
        if group.promoted:
            promoted += group.attempts
            promotion_extra += sync_premium
        if group.superseded:
            paid_twice += group.cost_usd
            promotion_extra += group.cost_usd
        if group.retry:
            retries += group.attempts
            if group.lane is Lane.SYNC and not group.promoted:
                retry_extra += sync_premium
        if not group.succeeded:
            retry_extra += group.cost_usd  # billed for an answer that was not used
    ordered = tuple(sorted(lines.values(), key=lambda line: (line.workload, line.lane.value, line.model)))
    return Invoice(
        day=day,
        lines=ordered,
        promotion_extra_usd=promotion_extra,
        paid_twice_usd=paid_twice,
        retry_extra_usd=retry_extra,
        promoted_attempts=promoted,
        retry_attempts=retries,
    )
