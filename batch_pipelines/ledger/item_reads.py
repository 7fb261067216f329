"""Reading a partition's items back: one item, or all of them in custom_id order, a page per short query."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import select

from batch_pipelines.core.errors import LedgerError
from batch_pipelines.core.item_status import ItemStatus
from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Endpoint, Lane
from batch_pipelines.core.usage import Usage
from batch_pipelines.ledger.database import Database
from batch_pipelines.ledger.rows import ItemRow
from batch_pipelines.ledger.schema import USAGE_COLUMNS
from batch_pipelines.ledger.schema import items as items_t

# What a caller may name a status by: the enum, an outcome kind, or the stored string.
StatusLike = ItemStatus | OutcomeKind | str


def status_values(statuses: Iterable[StatusLike]) -> list[str]:
    """The stored values of ``statuses``, sorted and unique; an unknown one is a LedgerError."""
    try:
        return sorted({ItemStatus.of(status).value for status in statuses})
    except ValueError as exc:
        raise LedgerError(str(exc)) from None


class ItemReader:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get_item(self, job: str, partition: str, custom_id: str) -> ItemRow | None:
        i = items_t
        with self._db.reading() as connection:
            row = connection.execute(
                select(i).where(i.c.job == job, i.c.partition == partition, i.c.custom_id == custom_id)
            ).first()
        return None if row is None else item_row(row)

    def iter_items(
        self,
        job: str,
        partition: str,
        *,
        statuses: Iterable[StatusLike] | None = None,
        batch_key: str | None = None,
        batch_key_prefix: str | None = None,
    ) -> Iterator[ItemRow]:
        i, hint, page_size = items_t, self._db.unindexed, self._db.chunk_size
        conditions = [i.c.job == job, i.c.partition == partition]
        # Pages walk the primary key in order; a status-index plan would sort the partition per page.
        if statuses is not None:
            conditions.append(hint(i.c.status).in_(status_values(statuses)))
        if batch_key is not None:
            conditions.append(hint(i.c.batch_key) == batch_key)
        if batch_key_prefix is not None:
            conditions.append(hint(i.c.batch_key).startswith(batch_key_prefix, autoescape=True))
        after: str | None = None
        while True:
            query = select(i).where(*conditions).order_by(i.c.custom_id).limit(page_size)
            if after is not None:
                query = query.where(i.c.custom_id > after)
            with self._db.reading() as connection:
                page = connection.execute(query).all()
            for row in page:
                yield item_row(row)
            if len(page) < page_size:
                return
            after = page[-1].custom_id


def item_row(row: Any) -> ItemRow:
    m = row._mapping
    return ItemRow(
        job=m["job"],
        partition=m["partition"],
        custom_id=m["custom_id"],
        provider=m["provider"],
        model=m["model"],
        endpoint=Endpoint(m["endpoint"]),
        lane=Lane(m["lane"]),
        status=ItemStatus(m["status"]),
        attempts=m["attempts"],
        deadline=m["deadline"],
        batch_key=m["batch_key"],
        estimated_input_tokens=m["estimated_input_tokens"],
        usage=Usage(*(int(m[name]) for name in USAGE_COLUMNS)),
        cost_usd=m["cost_usd"],
        sync_equivalent_usd=m["sync_equivalent_usd"],
        reason=m["reason"],
        status_code=m["status_code"],
        error_code=m["error_code"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )
