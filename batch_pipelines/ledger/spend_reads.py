"""What the ledger recorded as spent between two instants: attempts closed in the window, summed in SQL.

The nightly invoice reads this. Attempts are grouped by workload (job), lane and model, and
split by the four flags the invoice explains money with: promoted by the deadline watchdog (batch
key ``promo-…``), superseded (answered for an item that follows another attempt: paid twice), a
retry (attempt number above 1), and succeeded. Sums are exact: the money columns are NUMERIC on
PostgreSQL and integer pico-dollars on SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Engine

from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.usage import Usage
from batch_pipelines.ledger.schema import USAGE_COLUMNS, attempts, items

# The deadline watchdog's attempts carry batch keys with this prefix (services.deadlines).
PROMOTION_KEY_PREFIX = "promo-"
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class SpendGroup:
    job: str
    lane: Lane
    model: str
    promoted: bool
    superseded: bool
    retry: bool
    succeeded: bool
    attempts: int
    usage: Usage
    cost_usd: Decimal
    sync_equivalent_usd: Decimal


def spend_between(engine: Engine, start: datetime, end: datetime) -> list[SpendGroup]:
    """Closed attempts with ``start <= closed_at < end``, grouped; both instants timezone-aware."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    a, i = attempts, items
    superseded = case(
        (and_(a.c.outcome == OutcomeKind.SUCCEEDED.value, i.c.batch_key.is_distinct_from(a.c.batch_key)), 1), else_=0
    ).label("superseded")
    promoted = case((a.c.batch_key.like(f"{PROMOTION_KEY_PREFIX}%"), 1), else_=0).label("promoted")
    retry = case((a.c.attempt > 1, 1), else_=0).label("retry")
    succeeded = case((a.c.outcome == OutcomeKind.SUCCEEDED.value, 1), else_=0).label("succeeded")
    sums = [func.sum(a.c[name]) for name in USAGE_COLUMNS]
    statement = (
        select(
            a.c.job,
            a.c.lane,
            a.c.model,
            promoted,
            superseded,
            retry,
            succeeded,
            func.count(),
            func.sum(a.c.cost_usd),
            func.sum(a.c.sync_equivalent_usd),
            *sums,
        )
        .select_from(
            a.join(i, and_(i.c.job == a.c.job, i.c.partition == a.c.partition, i.c.custom_id == a.c.custom_id))
        )
        .where(a.c.outcome.is_not(None), a.c.closed_at >= start, a.c.closed_at < end)
        .group_by(a.c.job, a.c.lane, a.c.model, promoted, superseded, retry, succeeded)
        .order_by(a.c.job, a.c.lane, a.c.model)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    return [
        SpendGroup(
            job=job,
            lane=Lane(lane),
            model=model,
            promoted=bool(was_promoted),
            superseded=bool(was_superseded),
            retry=bool(was_retry),
            succeeded=bool(did_succeed),
            attempts=int(count),
            usage=Usage(*(int(v or 0) for v in usage_sums)),
            cost_usd=cost if cost is not None else _ZERO,
            sync_equivalent_usd=sync if sync is not None else _ZERO,
        )
        for job, lane, model, was_promoted, was_superseded, was_retry, did_succeed, count, cost, sync, *usage_sums in (
            rows
        )
    ]
