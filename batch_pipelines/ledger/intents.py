"""Submit intents: a shard's idempotency key, written before any provider call, then its file and batch.

An intent goes created -> uploaded (file id) -> submitted (vendor batch id). Each step is a
compare-and-set, so a submit retried after a crash re-attaches to what it already did, and an
attempt to attach a second batch to one intent (paying twice for a shard) is refused.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, or_, select, update

from batch_pipelines.core.errors import LedgerError
from batch_pipelines.core.requests import Endpoint
from batch_pipelines.ledger.database import Database, check_partition
from batch_pipelines.ledger.rows import IntentRow
from batch_pipelines.ledger.schema import INTENT_CREATED, INTENT_SUBMITTED, INTENT_UPLOADED, submit_intents


class IntentStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create_intent(
        self,
        intent_key: str,
        *,
        job: str,
        partition: str,
        provider: str,
        model: str,
        endpoint: Endpoint | str,
        fingerprint: str,
        item_count: int,
        round: int,
    ) -> IntentRow:
        check_partition(job, partition)
        now = self._db.clock()

        def work(connection: Connection) -> IntentRow:
            connection.execute(
                self._db.insert(submit_intents)
                .values(
                    intent_key=intent_key,
                    job=job,
                    partition=partition,
                    provider=provider,
                    model=model,
                    endpoint=endpoint_value(endpoint),
                    fingerprint=fingerprint,
                    item_count=item_count,
                    round=round,
                    status=INTENT_CREATED,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing()
            )
            row = _intent_in(connection, intent_key)
            if row.fingerprint != fingerprint:
                raise LedgerError(
                    f"submit intent {intent_key!r} exists with fingerprint {row.fingerprint!r}, not "
                    f"{fingerprint!r}: the shard's content changed since it was first submitted",
                    intent_key=intent_key,
                    stored_fingerprint=row.fingerprint,
                    fingerprint=fingerprint,
                )
            return row

        return self._db.write(work)

    def get_intent(self, intent_key: str) -> IntentRow | None:
        with self._db.reading() as connection:
            row = connection.execute(select(submit_intents).where(submit_intents.c.intent_key == intent_key)).first()
        return None if row is None else _intent_row(row)

    def intents(self, job: str, partition: str) -> list[IntentRow]:
        si = submit_intents
        with self._db.reading() as connection:
            rows = connection.execute(
                select(si)
                .where(si.c.job == job, si.c.partition == partition)
                .order_by(si.c.created_at, si.c.intent_key)
            ).all()
        return [_intent_row(row) for row in rows]

    def mark_intent_uploaded(self, intent_key: str, file_id: str) -> None:
        si = submit_intents

        def work(connection: Connection) -> None:
            changed = connection.execute(
                update(si)
                .where(si.c.intent_key == intent_key, si.c.status != INTENT_SUBMITTED)
                .values(status=INTENT_UPLOADED, file_id=file_id, updated_at=self._db.clock())
            ).rowcount
            if changed:
                return
            row = _intent_in(connection, intent_key)
            if row.file_id != file_id:
                raise LedgerError(
                    f"submit intent {intent_key!r} was already submitted with file {row.file_id!r}; "
                    f"refusing to record file {file_id!r}",
                    intent_key=intent_key,
                )

        self._db.write(work)

    def mark_intent_submitted(self, intent_key: str, vendor_batch_id: str) -> None:
        si = submit_intents

        def work(connection: Connection) -> None:
            changed = connection.execute(
                update(si)
                .where(
                    si.c.intent_key == intent_key,
                    or_(si.c.vendor_batch_id.is_(None), si.c.vendor_batch_id == vendor_batch_id),
                )
                .values(status=INTENT_SUBMITTED, vendor_batch_id=vendor_batch_id, updated_at=self._db.clock())
            ).rowcount
            if changed:
                return
            row = _intent_in(connection, intent_key)
            raise LedgerError(
                f"submit intent {intent_key!r} is already attached to batch {row.vendor_batch_id!r}; "
                f"refusing to attach {vendor_batch_id!r} (that would pay twice for one shard)",
                intent_key=intent_key,
                vendor_batch_id=row.vendor_batch_id,
                other_vendor_batch_id=vendor_batch_id,
            )

        self._db.write(work)


def endpoint_value(endpoint: Endpoint | str) -> str:
    return endpoint.value if isinstance(endpoint, Endpoint) else str(endpoint)


def _intent_in(connection: Connection, intent_key: str) -> IntentRow:
    row = connection.execute(select(submit_intents).where(submit_intents.c.intent_key == intent_key)).first()
    if row is None:
        raise LedgerError(f"no submit intent {intent_key!r} in the ledger", intent_key=intent_key)
    return _intent_row(row)


def _intent_row(row: Any) -> IntentRow:
    m = row._mapping
    return IntentRow(**{name: m[name] for name in IntentRow.__dataclass_fields__})
