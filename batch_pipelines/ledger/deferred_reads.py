"""The deferred buffer's reads and kept answers: a flush's calls, flushes, warnings, durations, lookups."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, select

from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.ledger.database import Database
from batch_pipelines.ledger.deferred_rows import (
    DEFERRED_JOB,
    CallLookup,
    CallRow,
    FlushRow,
    aware,
    call_row,
    chunks,
    flush_row,
)
from batch_pipelines.ledger.deferred_schema import CALL_FLUSHED, deferred_calls, deferred_flushes, deferred_responses
from batch_pipelines.ledger.ledger import Ledger
from batch_pipelines.ledger.schema import batches as batches_t


class CallReads:
    """The read side of ``DeferredBuffer``, and the vendor answers it keeps for flushed calls."""

    ledger: Ledger
    _db: Database
    _clock: Callable[[], datetime]

    def calls_of(self, flush_id: str) -> list[CallRow]:
        c = deferred_calls
        with self._db.reading() as connection:
            rows = connection.execute(select(c).where(c.c.flush_id == flush_id).order_by(c.c.call_id)).all()
        return [call_row(r._mapping) for r in rows]

    def flushes(self, states: Iterable[str] | None = None, *, since: datetime | None = None) -> list[FlushRow]:
        f = deferred_flushes
        query = select(f).order_by(f.c.created_at, f.c.flush_id)
        if states is not None:
            query = query.where(f.c.state.in_(sorted(set(states))))
        if since is not None:
            query = query.where(f.c.created_at >= since)
        with self._db.reading() as connection:
            return [flush_row(r._mapping) for r in connection.execute(query)]

    def warned_calls(self, flush_ids: Sequence[str]) -> list[tuple[str, str]]:
        """(call id, warning) of the calls in these flushes whose deadline even the sync lane could not meet."""
        c = deferred_calls
        found: list[tuple[str, str]] = []
        for chunk in chunks(list(flush_ids)):
            with self._db.reading() as connection:
                rows = connection.execute(
                    select(c.c.call_id, c.c.warning)
                    .where(c.c.flush_id.in_(chunk), c.c.warning.is_not(None))
                    .order_by(c.c.call_id)
                ).all()
            found.extend((r.call_id, r.warning) for r in rows)
        return found

    def batch_durations(self, provider: str, model: str, limit: int) -> list[timedelta]:
        """Create-to-end durations of the latest ``limit`` completed batches of a provider's model."""
        b = batches_t
        query = (
            select(b.c.created_at, b.c.ended_at)
            .where(
                b.c.provider == provider,
                b.c.model == model,
                b.c.status == BatchStatus.COMPLETED.value,
                b.c.created_at.is_not(None),
                b.c.ended_at.is_not(None),
            )
            .order_by(b.c.ended_at.desc())
            .limit(limit)
        )
        with self._db.reading() as connection:
            rows = connection.execute(query).all()
        return [max(timedelta(0), aware(ended) - aware(created)) for created, ended in rows]

    # --- answers ---------------------------------------------------------------------------

    def keep_responses(self, batch_key: str, outcomes: Sequence[ItemOutcome]) -> None:
        """Keep the vendor's body of each succeeded call, under the attempt (batch key) that produced it."""
        rows = [
            {"call_id": o.custom_id, "batch_key": batch_key, "body": _json(o.response)}
            for o in outcomes
            if o.kind is OutcomeKind.SUCCEEDED and o.response is not None
        ]
        if not rows:
            return
        statement = self._db.insert(deferred_responses).on_conflict_do_nothing()
        self._db.write(lambda connection: connection.execute(statement, rows))

    def lookup(self, call_ids: Sequence[str]) -> dict[str, CallLookup]:
        """The calls that exist among ``call_ids``, each with its item and kept answer once flushed."""
        c = deferred_calls
        found: dict[str, CallLookup] = {}
        for chunk in chunks(list(dict.fromkeys(call_ids))):
            with self._db.reading() as connection:
                calls = [call_row(r._mapping) for r in connection.execute(select(c).where(c.c.call_id.in_(chunk)))]
            for call in calls:
                item = None
                body = None
                if call.state == CALL_FLUSHED and call.flush_id is not None:
                    item = self.ledger.get_item(DEFERRED_JOB, call.flush_id, call.call_id)
                    if item is not None and item.status == OutcomeKind.SUCCEEDED.value and item.batch_key:
                        body = self._response(call.call_id, item.batch_key)
                found[call.call_id] = CallLookup(call, item, body)
        return found

    def _response(self, call_id: str, batch_key: str) -> str | None:
        r = deferred_responses
        with self._db.reading() as connection:
            return connection.scalar(select(r.c.body).where(and_(r.c.call_id == call_id, r.c.batch_key == batch_key)))


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
