"""The durable buffer of deferrable calls: enqueue, claim for a flush, and look calls up.

Every write is one transaction of the ledger (``BEGIN IMMEDIATE`` on SQLite, row locks on
PostgreSQL), so:

- ``enqueue`` has committed the call before it returns; with an idempotency key, the same key
  twice is one call (INSERT ... ON CONFLICT DO NOTHING on a unique index, then read the winner);
- ``claim`` moves waiting calls to a new flush with a compare-and-set on their state, in the
  same transaction that writes the flush rows: two flushers never claim the same call (on
  PostgreSQL the second skips rows the first has locked), and a crash leaves either nothing
  claimed or whole flushes that ``take_over_stale`` hands to the next flusher after a lease;
- ``mark_submitted`` is a compare-and-set on the flush's worker, so a flusher whose lease was
  taken over cannot mark a flush it no longer owns.

The buffer is split by concern: rows (``deferred_rows``), the SQLite enqueue fast path
(``deferred_enqueue``), claims and flush bookkeeping (``deferred_claims``) and reads
(``deferred_reads``); ``DeferredBuffer`` here joins them and owns the enqueue. Its public
names stay importable from this module.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.ledger.deferred_claims import FlushClaims
from batch_pipelines.ledger.deferred_enqueue import SqliteEnqueue
from batch_pipelines.ledger.deferred_reads import CallReads
from batch_pipelines.ledger.deferred_rows import (
    DEFERRED_JOB,
    CallLookup,
    CallRow,
    FlushRow,
    NewCall,
    call_row,
    new_call_id,
)
from batch_pipelines.ledger.deferred_schema import CALL_QUEUED, deferred_calls
from batch_pipelines.ledger.ledger import Ledger

__all__ = [
    "DEFERRED_JOB",
    "CallLookup",
    "CallRow",
    "DeferredBuffer",
    "FlushRow",
    "NewCall",
    "SqliteEnqueue",
    "new_call_id",
]


class DeferredBuffer(FlushClaims, CallReads):
    """The buffer's tables, in the ledger's database and transactions."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        # The buffer's tables come with the ledger's migrations (revision 0003).
        self._db = ledger.database
        self._clock = self._db.clock
        # On a SQLite file, enqueue bypasses ``Database`` on purpose: it is the router's measured
        # hot path (bench/router.py), and SQLAlchemy's per-call overhead was ten times the insert.
        database = ledger.engine.url.database if ledger.dialect == "sqlite" else None
        self._fast = SqliteEnqueue(database) if database and database != ":memory:" else None

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()

    # --- enqueue ---------------------------------------------------------------------------

    def enqueue(self, call: NewCall) -> tuple[CallRow, bool]:
        """Write ``call`` durably; returns its row and whether it is new (False: its key was seen)."""
        now = self._clock()
        call_id = new_call_id()
        values = {
            "call_id": call_id,
            "idempotency_key": call.idempotency_key,
            "provider": call.provider,
            "model": call.model,
            "endpoint": call.endpoint,
            "body": call.body,
            "deadline": call.deadline,
            "state": CALL_QUEUED,
            "flush_id": None,
            "warning": call.warning,
            "created_at": now,
            "updated_at": now,
        }
        if self._fast is not None:
            if self._fast.insert(values):
                return call_row(values), True
            return self._db.write(lambda connection: self._existing(connection, call)), False
        statement = self._db.insert(deferred_calls).values(**values).on_conflict_do_nothing()

        def work(connection: Connection) -> tuple[CallRow, bool]:
            inserted = connection.execute(statement).rowcount
            if inserted:
                return call_row(values), True
            return self._existing(connection, call), False

        return self._db.write(work)

    def _existing(self, connection: Connection, call: NewCall) -> CallRow:
        """The call already written under ``call``'s idempotency key; a different request under it is refused."""
        existing = connection.execute(
            select(deferred_calls).where(deferred_calls.c.idempotency_key == call.idempotency_key)
        ).first()
        if existing is None:  # a call_id collision: uuid4 makes this practically impossible
            raise InvalidInputError("could not allocate a call id; try again")
        row = call_row(existing._mapping)
        if (row.model, row.endpoint, row.body) != (call.model, call.endpoint, call.body):
            raise InvalidInputError(
                f"idempotency key {call.idempotency_key!r} was already used for a different request "
                f"(call {row.call_id}); use a new key for a new request",
                call_id=row.call_id,
            )
        return row
