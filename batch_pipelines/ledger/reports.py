"""What a partition adds up to (counts by status, exact sums over attempts, promotions), and what a day spent."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, case, func, select

from batch_pipelines.core.item_status import ItemStatus
from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.usage import Usage
from batch_pipelines.ledger.database import Database
from batch_pipelines.ledger.rows import AttemptGroup, ModelTotals, PartitionTotals, SpendGroup
from batch_pipelines.ledger.schema import USAGE_COLUMNS, attempts
from batch_pipelines.ledger.schema import items as items_t

_ZERO = Decimal(0)
# Attempts the deadline watchdog moved to the sync lane carry batch keys with this prefix.
PROMOTION_KEY_PREFIX = "promo-"


class Reports:
    def __init__(self, db: Database) -> None:
        self._db = db

    def item_counts(self, job: str, partition: str) -> dict[ItemStatus, int]:
        with self._db.reading() as connection:
            return _item_counts(connection, job, partition)

    def partition_totals(self, job: str, partition: str) -> PartitionTotals:
        a = attempts
        sums = [func.sum(a.c[name]) for name in USAGE_COLUMNS]
        with self._db.reading() as connection:
            # One connection, one snapshot: the counts and the sums describe the same moment.
            counts = _item_counts(connection, job, partition)
            per_model = connection.execute(
                select(
                    a.c.model,
                    func.count(a.c.outcome),
                    func.count(),
                    func.sum(a.c.cost_usd),
                    func.sum(a.c.sync_equivalent_usd),
                    *sums,
                )
                .where(a.c.job == job, a.c.partition == partition)
                .group_by(a.c.model)
            ).all()
        by_model: dict[str, ModelTotals] = {}
        closed_total = open_total = 0
        usage_total = Usage()
        cost_total = sync_total = _ZERO
        for model, closed, total, cost, sync, *usage_sums in per_model:
            usage = Usage(*(int(v or 0) for v in usage_sums))
            cost = cost if cost is not None else _ZERO
            sync = sync if sync is not None else _ZERO
            by_model[model] = ModelTotals(model, int(closed), usage, cost, sync)
            closed_total += int(closed)
            open_total += int(total) - int(closed)
            usage_total += usage
            cost_total += cost
            sync_total += sync
        return PartitionTotals(
            job=job,
            partition=partition,
            item_count=sum(counts.values()),
            counts=counts,
            attempts=closed_total,
            open_attempts=open_total,
            usage=usage_total,
            cost_usd=cost_total,
            sync_equivalent_usd=sync_total,
            by_model=by_model,
        )

    def attempt_groups(self, job: str, partition: str) -> list[AttemptGroup]:
        a, i = attempts, items_t
        superseded = and_(a.c.outcome == OutcomeKind.SUCCEEDED.value, i.c.batch_key.is_distinct_from(a.c.batch_key))
        flag = case((superseded, 1), else_=0).label("superseded")
        promoted = case((a.c.batch_key.like(f"{PROMOTION_KEY_PREFIX}%"), 1), else_=0).label("promoted")
        sums = [func.sum(a.c[name]) for name in USAGE_COLUMNS]
        with self._db.reading() as connection:
            rows = connection.execute(
                select(
                    a.c.lane,
                    a.c.model,
                    flag,
                    promoted,
                    func.count(),
                    func.sum(a.c.cost_usd),
                    func.sum(a.c.sync_equivalent_usd),
                    *sums,
                )
                .select_from(
                    a.join(i, and_(i.c.job == a.c.job, i.c.partition == a.c.partition, i.c.custom_id == a.c.custom_id))
                )
                .where(a.c.job == job, a.c.partition == partition, a.c.outcome.is_not(None))
                .group_by(a.c.lane, a.c.model, flag, promoted)
                .order_by(a.c.lane, a.c.model, flag, promoted)
            ).all()
        return [
            AttemptGroup(
                lane=Lane(lane),
                model=model,
                superseded=bool(flagged),
                promoted=bool(was_promoted),
                attempts=int(count),
                usage=Usage(*(int(v or 0) for v in usage_sums)),
                cost_usd=cost if cost is not None else _ZERO,
                sync_equivalent_usd=sync if sync is not None else _ZERO,
            )
            for lane, model, flagged, was_promoted, count, cost, sync, *usage_sums in rows
        ]

    def unfinished_in_batches(self, job: str, partition: str, batch_keys: Sequence[str]) -> tuple[int, datetime | None]:
        if not batch_keys:
            return 0, None
        i = items_t
        with self._db.reading() as connection:
            count, earliest = connection.execute(
                select(func.count(), func.min(i.c.deadline)).where(
                    i.c.job == job,
                    i.c.partition == partition,
                    i.c.status == ItemStatus.SUBMITTED.value,
                    i.c.batch_key.in_(list(batch_keys)),
                )
            ).one()
        return int(count), earliest

    def spend_between(self, start: datetime, end: datetime) -> list[SpendGroup]:
        """Closed attempts with ``start <= closed_at < end`` (the nightly invoice), grouped by job, lane and
        model and split by four flags: promoted by the watchdog, superseded (paid twice), a retry
        (attempt above 1), succeeded. Both instants timezone-aware."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        a, i = attempts, items_t
        superseded = case(
            (and_(a.c.outcome == OutcomeKind.SUCCEEDED.value, i.c.batch_key.is_distinct_from(a.c.batch_key)), 1),
            else_=0,
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
        with self._db.reading() as connection:
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
            for (
                job,
                lane,
                model,
                was_promoted,
                was_superseded,
                was_retry,
                did_succeed,
                count,
                cost,
                sync,
                *usage_sums,
            ) in rows
        ]

    def attempt_log(self, chunk: int = 65_536) -> Iterator[list[tuple[Any, ...]]]:
        """Every closed attempt as a call of a traffic log, in chunks: (job, model, lane, opened_at,
        deadline, input, cached, output tokens). The audit reads the ledger through this."""
        a, i = attempts, items_t
        statement = (
            select(
                a.c.job,
                a.c.model,
                a.c.lane,
                a.c.opened_at,
                i.c.deadline,
                a.c.input_tokens,
                a.c.cached_input_tokens,
                a.c.output_tokens,
            )
            .select_from(
                a.join(i, and_(i.c.job == a.c.job, i.c.partition == a.c.partition, i.c.custom_id == a.c.custom_id))
            )
            .where(a.c.outcome.is_not(None))
            .order_by(a.c.opened_at)
        )
        with self._db.reading() as connection:
            result = connection.execution_options(stream_results=True, yield_per=chunk).execute(statement)
            for part in result.partitions(chunk):
                yield [tuple(row) for row in part]


def _item_counts(connection: Connection, job: str, partition: str) -> dict[ItemStatus, int]:
    i = items_t
    rows = connection.execute(
        select(i.c.status, func.count()).where(i.c.job == job, i.c.partition == partition).group_by(i.c.status)
    ).all()
    return {ItemStatus(status): int(count) for status, count in rows}
