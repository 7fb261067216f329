"""Provider batches as last polled, and the claim a worker takes to reconcile one.

A terminal status is never overwritten by a stale non-terminal poll. Reconciling a batch is
claimed with a compare-and-set on its row (none -> reconciling -> reconciled), so two workers
never collect the same batch at once; a claim left by a dead worker goes stale and is taken over.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Update,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    update,
)

from batch_pipelines.core.batches import BatchInfo
from batch_pipelines.core.errors import LedgerError
from batch_pipelines.core.status import TERMINAL_STATUSES, BatchStatus
from batch_pipelines.ledger.database import Database, check_partition, chunks
from batch_pipelines.ledger.intents import endpoint_value
from batch_pipelines.ledger.rows import BatchRow, batch_errors_from_json, batch_errors_to_json
from batch_pipelines.ledger.schema import RECONCILE_DONE, RECONCILE_NONE, RECONCILE_RUNNING
from batch_pipelines.ledger.schema import batches as batches_t

_TERMINAL_VALUES = tuple(sorted(s.value for s in TERMINAL_STATUSES))
# The columns a poll refreshes, all taken from the vendor's BatchInfo.
_INFO_COLUMNS = (
    "provider",
    "vendor_batch_id",
    "status",
    "vendor_status",
    "endpoint",
    "model",
    "total",
    "completed",
    "failed",
    "input_file_id",
    "output_file_id",
    "error_file_id",
    "results_url",
    "errors",
    "metadata",
    "created_at",
    "expires_at",
    "ended_at",
)


class BatchStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def record_batch(self, info: BatchInfo, *, intent_key: str | None, job: str, partition: str) -> None:
        check_partition(job, partition)
        now = self._db.clock()
        values = {
            **_batch_values(info),
            "job": job,
            "partition": partition,
            "intent_key": intent_key,
            "recorded_at": now,
            "updated_at": now,
        }
        stmt = self._db.insert(batches_t).values(**values)
        refreshed: dict[str, ColumnElement[Any]] = {
            name: stmt.excluded[name] for name in (*_INFO_COLUMNS, "updated_at")
        }
        refreshed["intent_key"] = func.coalesce(batches_t.c.intent_key, stmt.excluded.intent_key)
        upsert = stmt.on_conflict_do_update(
            index_elements=[batches_t.c.provider, batches_t.c.vendor_batch_id],
            set_=refreshed,
            where=or_(batches_t.c.status.not_in(_TERMINAL_VALUES), stmt.excluded.status.in_(_TERMINAL_VALUES)),
        )
        self._db.write(lambda connection: connection.execute(upsert))

    def update_batches(self, infos: Iterable[BatchInfo]) -> int:
        b = batches_t
        fields = tuple(name for name in _INFO_COLUMNS if name not in ("provider", "vendor_batch_id"))
        stmt = (
            update(b)
            .where(
                b.c.provider == bindparam("key_provider"),
                b.c.vendor_batch_id == bindparam("key_vendor_batch_id"),
                # Inline constants: executemany cannot expand an IN list of bound parameters.
                or_(
                    b.c.status.not_in([literal_column(f"'{value}'") for value in _TERMINAL_VALUES]),
                    bindparam("new_is_terminal", type_=Boolean()),
                ),
            )
            .values(
                **{name: bindparam(f"new_{name}", type_=b.c[name].type) for name in fields}, updated_at=bindparam("now")
            )
        )
        updated = 0
        for chunk in chunks(infos, self._db.chunk_size):
            now = self._db.clock()
            params = []
            for info in chunk:
                values = _batch_values(info)
                params.append(
                    {
                        "key_provider": info.provider,
                        "key_vendor_batch_id": info.vendor_batch_id,
                        "new_is_terminal": info.status.is_terminal,
                        "now": now,
                        **{f"new_{name}": values[name] for name in fields},
                    }
                )
            updated += self._db.write(functools.partial(_execute_many, stmt, params=params))
        return updated

    def get_batch(self, provider: str, vendor_batch_id: str) -> BatchRow | None:
        with self._db.reading() as connection:
            row = connection.execute(
                select(batches_t).where(
                    batches_t.c.provider == provider, batches_t.c.vendor_batch_id == vendor_batch_id
                )
            ).first()
        return None if row is None else _batch_row(row)

    def batches(self, job: str, partition: str) -> list[BatchRow]:
        return self._batches(batches_t.c.job == job, batches_t.c.partition == partition)

    def open_batches(self, provider: str | None) -> list[BatchRow]:
        conditions: list[ColumnElement[bool]] = [batches_t.c.status.not_in(_TERMINAL_VALUES)]
        if provider is not None:
            conditions.append(batches_t.c.provider == provider)
        return self._batches(*conditions)

    def unreconciled_batches(self, provider: str | None) -> list[BatchRow]:
        conditions: list[ColumnElement[bool]] = [
            batches_t.c.status.in_(_TERMINAL_VALUES),
            batches_t.c.reconcile_state != RECONCILE_DONE,
        ]
        if provider is not None:
            conditions.append(batches_t.c.provider == provider)
        return self._batches(*conditions)

    def active_partitions(self, job: str, *, reconciled_since: datetime | None) -> list[str]:
        b = batches_t
        condition = b.c.reconcile_state != RECONCILE_DONE
        if reconciled_since is not None:
            condition = or_(condition, b.c.updated_at >= reconciled_since)
        with self._db.reading() as connection:
            rows = connection.execute(
                select(b.c.partition).where(b.c.job == job, condition).distinct().order_by(b.c.partition)
            ).all()
        return [row.partition for row in rows]

    def _batches(self, *conditions: ColumnElement[bool]) -> list[BatchRow]:
        with self._db.reading() as connection:
            rows = connection.execute(
                select(batches_t).where(*conditions).order_by(batches_t.c.recorded_at, batches_t.c.vendor_batch_id)
            ).all()
        return [_batch_row(row) for row in rows]

    def claim_batch_for_reconcile(
        self, provider: str, vendor_batch_id: str, *, worker: str, stale_after: timedelta, now: datetime | None
    ) -> bool:
        b = batches_t
        at = now or self._db.clock()

        def work(connection: Connection) -> bool:
            taken = connection.execute(
                update(b)
                .where(
                    b.c.provider == provider,
                    b.c.vendor_batch_id == vendor_batch_id,
                    or_(
                        b.c.reconcile_state == RECONCILE_NONE,
                        and_(
                            b.c.reconcile_state == RECONCILE_RUNNING,
                            or_(b.c.reconcile_worker == worker, b.c.reconcile_claimed_at < at - stale_after),
                        ),
                    ),
                )
                .values(reconcile_state=RECONCILE_RUNNING, reconcile_worker=worker, reconcile_claimed_at=at)
            ).rowcount
            if not taken:
                _require_batch(connection, provider, vendor_batch_id)
            return bool(taken)

        return self._db.write(work)

    def end_claim(self, provider: str, vendor_batch_id: str, worker: str | None, state: str) -> bool:
        """Move the claim to ``state`` (reconciled, or none to give it back); False if another worker holds it."""
        b = batches_t
        holder = (
            and_(b.c.reconcile_state == RECONCILE_RUNNING, b.c.reconcile_worker == worker)
            if worker is not None
            else b.c.reconcile_state != RECONCILE_DONE
        )

        def work(connection: Connection) -> bool:
            changed = connection.execute(
                update(b)
                .where(b.c.provider == provider, b.c.vendor_batch_id == vendor_batch_id, holder)
                .values(
                    reconcile_state=state,
                    reconcile_worker=(worker or b.c.reconcile_worker) if state == RECONCILE_DONE else None,
                    reconcile_claimed_at=b.c.reconcile_claimed_at if state == RECONCILE_DONE else None,
                )
            ).rowcount
            if not changed:
                _require_batch(connection, provider, vendor_batch_id)
            return bool(changed)

        return self._db.write(work)


def _execute_many(statement: Update, connection: Connection, *, params: list[dict[str, Any]]) -> int:
    return connection.execute(statement, params).rowcount


def _require_batch(connection: Connection, provider: str, vendor_batch_id: str) -> None:
    found = connection.scalar(
        select(func.count()).where(batches_t.c.provider == provider, batches_t.c.vendor_batch_id == vendor_batch_id)
    )
    if not found:
        raise LedgerError(
            f"no {provider} batch {vendor_batch_id!r} in the ledger",
            provider=provider,
            vendor_batch_id=vendor_batch_id,
        )


def _batch_values(info: BatchInfo) -> dict[str, Any]:
    return {
        "provider": info.provider,
        "vendor_batch_id": info.vendor_batch_id,
        "status": info.status.value,
        "vendor_status": info.vendor_status,
        "endpoint": None if info.endpoint is None else endpoint_value(info.endpoint),
        "model": info.model,
        "total": info.total,
        "completed": info.completed,
        "failed": info.failed,
        "input_file_id": info.input_file_id,
        "output_file_id": info.output_file_id,
        "error_file_id": info.error_file_id,
        "results_url": info.results_url,
        "errors": json.dumps(batch_errors_to_json(info.errors)),
        "metadata": json.dumps(dict(info.metadata), sort_keys=True),
        "created_at": info.created_at,
        "expires_at": info.expires_at,
        "ended_at": info.ended_at,
    }


def _batch_row(row: Any) -> BatchRow:
    m = dict(row._mapping)
    m["status"] = BatchStatus(m["status"])
    m["errors"] = batch_errors_from_json(json.loads(m["errors"]) if m["errors"] else None)
    m["metadata"] = json.loads(m["metadata"]) if m["metadata"] else {}
    return BatchRow(**{name: m[name] for name in BatchRow.__dataclass_fields__})
