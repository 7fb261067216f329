"""The item state machine: pending -> submitted (under a batch key) -> an outcome, and back for a retry.

Every bulk operation is set-based: a chunk of keys or outcomes is bulk-written into a
per-connection temporary table (one executemany on SQLite, one COPY on PostgreSQL), then joined
against the ledger's tables in a handful of statements. Each chunk is one transaction, so a
process killed at any point leaves whole chunks behind, and replaying the call finishes the job
without counting anything twice:

- ``record_items`` inserts with ON CONFLICT DO NOTHING;
- ``assign_items`` opens one ``attempts`` row per (item, batch_key), keyed on exactly that;
- ``record_outcomes`` closes an attempt only while it is open (compare-and-set on
  ``outcome IS NULL``) and moves an item only while it is ``submitted`` under that batch_key.

On PostgreSQL those compare-and-set UPDATEs take row locks, so two workers replaying the same
outcomes serialise on each row and the second finds nothing left to change.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, delete, literal, select, tuple_, update

from batch_pipelines.core.errors import LedgerError
from batch_pipelines.core.item_status import RETRYABLE_ITEM_STATUSES, ItemStatus
from batch_pipelines.core.outcomes import ItemOutcome
from batch_pipelines.core.requests import Lane, LLMRequest
from batch_pipelines.ledger.bulk import BulkWriter
from batch_pipelines.ledger.database import Database, check_partition, chunks
from batch_pipelines.ledger.schema import (
    ITEM_STAGE_COLUMNS,
    USAGE_COLUMNS,
    UTCDateTime,
    attempts,
    item_stage,
    key_stage,
    outcome_stage,
)
from batch_pipelines.ledger.schema import items as items_t

_ZERO = Decimal(0)
_NO_COST = (_ZERO, _ZERO)
_PENDING, _SUBMITTED = ItemStatus.PENDING.value, ItemStatus.SUBMITTED.value

# The columns of one staged outcome, in the order record_outcomes builds its rows.
_OUTCOME_STAGE_COLUMNS = (
    "custom_id",
    "kind",
    "reason",
    "status_code",
    "error_code",
    *USAGE_COLUMNS,
    "cost_usd",
    "sync_equivalent_usd",
)


def _estimate(metadata: Mapping[str, Any]) -> int | None:
    value = metadata.get("estimated_input_tokens")
    return None if value is None else int(value)


class ItemStore:
    """Moves items between statuses, one set-based transaction per chunk."""

    def __init__(self, db: Database) -> None:
        self._db = db
        dialect = db.engine.dialect
        # SQLite takes new items straight into bp_items; PostgreSQL copies them into a stage first.
        item_target = items_t if db.dialect == "sqlite" else item_stage
        self._item_writer = BulkWriter(item_target, [item_target.c[name] for name in ITEM_STAGE_COLUMNS], dialect)
        self._outcome_writer = BulkWriter(
            outcome_stage, [outcome_stage.c[name] for name in _OUTCOME_STAGE_COLUMNS], dialect
        )
        self._key_writer = BulkWriter(key_stage, [key_stage.c.custom_id], dialect)

    def record_items(self, job: str, partition: str, requests: Iterable[LLMRequest], *, provider: str) -> int:
        check_partition(job, partition)
        db = self._db
        inserted = 0
        for chunk in chunks(requests, db.chunk_size):
            now = db.clock()
            rows = [
                (
                    job,
                    partition,
                    r.custom_id,
                    provider,
                    r.model,
                    r.endpoint.value,
                    r.lane.value,
                    _PENDING,
                    0,
                    r.deadline,
                    _estimate(r.metadata) if r.metadata else None,
                    now,
                    now,
                )
                for r in chunk
            ]
            inserted += db.write(functools.partial(self._insert_items, rows=rows))
        db.analyze_after_bulk(inserted, items_t)
        return inserted

    def _insert_items(self, connection: Connection, *, rows: list[tuple[Any, ...]]) -> int:
        if self._db.dialect == "sqlite":
            return self._item_writer.write(connection, rows)
        connection.execute(delete(item_stage))
        self._item_writer.write(connection, rows)
        columns = [items_t.c[name] for name in ITEM_STAGE_COLUMNS]
        return connection.execute(
            self._db.insert(items_t)
            .from_select(columns, select(*(item_stage.c[name] for name in ITEM_STAGE_COLUMNS)))
            .on_conflict_do_nothing()
            .execution_options(preserve_rowcount=True)
        ).rowcount

    def _stage_keys(self, connection: Connection, custom_ids: Sequence[str]) -> None:
        connection.execute(delete(key_stage))
        self._key_writer.write(connection, [(custom_id,) for custom_id in dict.fromkeys(custom_ids)])
        self._db.analyze(connection, key_stage)

    def assign(
        self,
        job: str,
        partition: str,
        custom_ids: Iterable[str],
        batch_key: str,
        lane: Lane,
        from_statuses: tuple[ItemStatus, ...],
    ) -> int:
        """Items in ``from_statuses`` -> submitted under ``batch_key``, one attempt row opened each."""
        check_partition(job, partition)
        if not batch_key:
            raise LedgerError("batch_key must be non-empty")
        db = self._db
        i, hint = items_t, db.unindexed
        sources = [status.value for status in from_statuses]
        in_chunk = and_(i.c.job == job, i.c.partition == partition, i.c.custom_id.in_(select(key_stage.c.custom_id)))
        moved_total = 0
        for chunk in chunks(custom_ids, db.chunk_size):

            def work(connection: Connection, chunk: list[str] = chunk) -> int:
                now = db.clock()
                self._stage_keys(connection, chunk)
                moved = connection.execute(
                    update(i)
                    .where(in_chunk, hint(i.c.status).in_(sources), hint(i.c.batch_key).is_distinct_from(batch_key))
                    .values(
                        status=_SUBMITTED,
                        batch_key=batch_key,
                        lane=lane.value,
                        attempts=i.c.attempts + 1,
                        updated_at=now,
                    )
                ).rowcount
                opened = connection.execute(
                    db.insert(attempts)
                    .from_select(
                        ["job", "partition", "custom_id", "batch_key", "attempt", "lane", "model", "opened_at"],
                        select(
                            i.c.job,
                            i.c.partition,
                            i.c.custom_id,
                            i.c.batch_key,
                            i.c.attempts,
                            i.c.lane,
                            i.c.model,
                            literal(now, UTCDateTime()),
                        ).where(in_chunk, hint(i.c.batch_key) == batch_key, hint(i.c.status) == _SUBMITTED),
                    )
                    .on_conflict_do_nothing()
                    .execution_options(preserve_rowcount=True)
                ).rowcount
                if opened < moved:
                    raise LedgerError(
                        f"batch_key {batch_key!r} was already used for {moved - opened} of these items in "
                        f"{job}/{partition}; each submission needs a fresh key",
                        job=job,
                        partition=partition,
                        batch_key=batch_key,
                    )
                return moved

            moved_total += db.write(work)
        db.analyze_after_bulk(moved_total, items_t, attempts)
        return moved_total

    def record_outcomes(
        self,
        job: str,
        partition: str,
        batch_key: str,
        outcomes: Iterable[ItemOutcome],
        costs: Mapping[str, tuple[Decimal, Decimal]] | None,
        lane: Lane,
    ) -> int:
        check_partition(job, partition)
        lane_value = Lane(lane).value
        moved_total = 0
        for chunk in chunks(outcomes, self._db.chunk_size):
            # The first outcome for a custom_id wins: later ones in this chunk are dropped here,
            # later ones in other chunks find the attempt already closed.
            first: dict[str, ItemOutcome] = {}
            for o in chunk:
                first.setdefault(o.custom_id, o)
            rows = []
            for o in first.values():
                u = o.usage
                cost, sync = costs.get(o.custom_id, _NO_COST) if costs else _NO_COST
                rows.append(
                    (
                        o.custom_id,
                        o.kind.value,
                        o.reason,
                        o.status_code,
                        o.error_code,
                        u.input_tokens,
                        u.cached_input_tokens,
                        u.cache_write_tokens,
                        u.output_tokens,
                        u.reasoning_tokens,
                        cost,
                        sync,
                    )
                )

            def work(connection: Connection, rows: list[tuple[Any, ...]] = rows) -> int:
                return self._close_attempts(connection, job, partition, batch_key, lane_value, rows)

            moved_total += self._db.write(work)
        return moved_total

    def _close_attempts(
        self, connection: Connection, job: str, partition: str, batch_key: str, lane: str, rows: list[tuple[Any, ...]]
    ) -> int:
        now = self._db.clock()
        token = uuid.uuid4().hex
        s, a, i, hint = outcome_stage, attempts, items_t, self._db.unindexed
        connection.execute(delete(s))
        self._outcome_writer.write(connection, rows)
        self._db.analyze(connection, outcome_stage)
        staged = select(s.c.custom_id)
        outcome_columns = ("reason", "status_code", "error_code", *USAGE_COLUMNS, "cost_usd", "sync_equivalent_usd")
        closed = connection.execute(
            update(a)
            .where(
                a.c.job == job,
                a.c.partition == partition,
                a.c.custom_id.in_(staged),
                a.c.batch_key == batch_key,
                a.c.outcome.is_(None),
            )
            .values(
                {
                    tuple_(a.c.outcome, *(a.c[name] for name in outcome_columns)): select(
                        s.c.kind, *(s.c[name] for name in outcome_columns)
                    )
                    .where(s.c.custom_id == a.c.custom_id)
                    .scalar_subquery(),
                    a.c.lane: lane,
                    a.c.closed_by: token,
                    a.c.closed_at: now,
                }
            )
        ).rowcount
        if not closed:
            return 0
        summed = (*USAGE_COLUMNS, "cost_usd", "sync_equivalent_usd")
        accumulate = [i.c[name] + s.c[name] for name in summed]
        # An item submitted under batch_key has that attempt open (assign opens both together),
        # so this compare-and-set moves exactly the items whose attempts were closed above.
        moved = connection.execute(
            update(i)
            .where(
                i.c.job == job,
                i.c.partition == partition,
                i.c.custom_id.in_(staged),
                hint(i.c.batch_key) == batch_key,
                hint(i.c.status) == _SUBMITTED,
            )
            .values(
                {
                    tuple_(
                        i.c.status, i.c.reason, i.c.status_code, i.c.error_code, *(i.c[name] for name in summed)
                    ): select(s.c.kind, s.c.reason, s.c.status_code, s.c.error_code, *accumulate)
                    .where(s.c.custom_id == i.c.custom_id)
                    .scalar_subquery(),
                    i.c.updated_at: now,
                }
            )
        ).rowcount
        if closed > moved:
            # Attempts closed just now for items that had moved on (promoted elsewhere): the vendor
            # still charged for them, so those items' running totals include the cost.
            closed_now = select(a.c.custom_id).where(
                a.c.job == job, a.c.partition == partition, a.c.batch_key == batch_key, a.c.closed_by == token
            )
            connection.execute(
                update(i)
                .where(
                    i.c.job == job,
                    i.c.partition == partition,
                    i.c.custom_id.in_(staged),
                    i.c.custom_id.in_(closed_now),
                    hint(i.c.batch_key).is_distinct_from(batch_key),
                )
                .values(
                    {
                        tuple_(*(i.c[name] for name in summed)): select(*accumulate)
                        .where(s.c.custom_id == i.c.custom_id)
                        .scalar_subquery(),
                        i.c.updated_at: now,
                    }
                )
            )
        return moved

    def release_items(self, job: str, partition: str, *, batch_key: str) -> int:
        check_partition(job, partition)
        i, a = items_t, attempts

        def work(connection: Connection) -> int:
            connection.execute(
                delete(a).where(
                    a.c.job == job, a.c.partition == partition, a.c.batch_key == batch_key, a.c.outcome.is_(None)
                )
            )
            return connection.execute(
                update(i)
                .where(i.c.job == job, i.c.partition == partition, i.c.status == _SUBMITTED, i.c.batch_key == batch_key)
                .values(status=_PENDING, batch_key=None, attempts=i.c.attempts - 1, updated_at=self._db.clock())
            ).rowcount

        return self._db.write(work)

    def mark_for_retry(self, job: str, partition: str, custom_ids: Iterable[str], *, lane: Lane | None) -> int:
        check_partition(job, partition)
        db, i = self._db, items_t
        values: dict[str, Any] = {"status": _PENDING, "batch_key": None}
        if lane is not None:
            values["lane"] = Lane(lane).value
        retryable = sorted(status.value for status in RETRYABLE_ITEM_STATUSES)
        moved_total = 0
        for chunk in chunks(custom_ids, db.chunk_size):

            def work(connection: Connection, chunk: list[str] = chunk) -> int:
                self._stage_keys(connection, chunk)
                return connection.execute(
                    update(i)
                    .where(
                        i.c.job == job,
                        i.c.partition == partition,
                        i.c.custom_id.in_(select(key_stage.c.custom_id)),
                        db.unindexed(i.c.status).in_(retryable),
                    )
                    .values(updated_at=db.clock(), **values)
                ).rowcount

            moved_total += db.write(work)
        return moved_total
