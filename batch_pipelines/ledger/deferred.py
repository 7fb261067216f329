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
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, and_, func, insert, select, update

from batch_pipelines.core.errors import InvalidInputError, LedgerError
from batch_pipelines.core.flush import FlushPart, WaitingCall, WaitingGroup
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.ledger.deferred_schema import (
    CALL_CLAIMED,
    CALL_FLUSHED,
    CALL_QUEUED,
    FLUSH_CLAIMED,
    FLUSH_COLLECTED,
    FLUSH_SUBMITTED,
    deferred_calls,
    deferred_flushes,
    deferred_responses,
)
from batch_pipelines.ledger.engine import SQLITE_BUSY_TIMEOUT_MS
from batch_pipelines.ledger.ledger import Ledger
from batch_pipelines.ledger.rows import ItemRow
from batch_pipelines.ledger.schema import batches as batches_t

# The ledger job under which flushed calls become items; the flush id is their partition.
DEFERRED_JOB = "deferred"
_ID_CHUNK = 500


@dataclass(frozen=True, slots=True)
class NewCall:
    """A deferrable call as the caller made it, checked and routed, before it is written."""

    provider: str
    model: str
    endpoint: str
    body: str  # the request body, JSON
    deadline: datetime | None = None
    idempotency_key: str | None = None
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class CallRow:
    call_id: str
    idempotency_key: str | None
    provider: str
    model: str
    endpoint: str
    body: str
    deadline: datetime | None
    state: str
    flush_id: str | None
    warning: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class FlushRow:
    flush_id: str
    provider: str
    model: str
    endpoint: str
    lane: Lane
    state: str
    worker: str
    claimed_at: datetime
    call_count: int
    earliest_deadline: datetime | None
    reason: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CallLookup:
    """A call, the ledger item it became once flushed, and the answer kept for it."""

    call: CallRow
    item: ItemRow | None
    response_body: str | None


def new_call_id() -> str:
    return f"dfr_{uuid.uuid4().hex}"


class DeferredBuffer:
    """The buffer's tables, in the ledger's database and transactions."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        # The buffer's tables come with the ledger's migrations (revision 0003).
        self._db = ledger.database
        self._clock = self._db.clock
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
                return _call_row(values), True
            return self._db.write(lambda connection: self._existing(connection, call)), False
        statement = self._db.insert(deferred_calls).values(**values).on_conflict_do_nothing()

        def work(connection: Connection) -> tuple[CallRow, bool]:
            inserted = connection.execute(statement).rowcount
            if inserted:
                return _call_row(values), True
            return self._existing(connection, call), False

        return self._db.write(work)

    def _existing(self, connection: Connection, call: NewCall) -> CallRow:
        """The call already written under ``call``'s idempotency key; a different request under it is refused."""
        existing = connection.execute(
            select(deferred_calls).where(deferred_calls.c.idempotency_key == call.idempotency_key)
        ).first()
        if existing is None:  # a call_id collision: uuid4 makes this practically impossible
            raise InvalidInputError("could not allocate a call id; try again")
        row = _call_row(existing._mapping)
        if (row.model, row.endpoint, row.body) != (call.model, call.endpoint, call.body):
            raise InvalidInputError(
                f"idempotency key {call.idempotency_key!r} was already used for a different request "
                f"(call {row.call_id}); use a new key for a new request",
                call_id=row.call_id,
            )
        return row

    # --- the queue -------------------------------------------------------------------------

    def waiting_groups(self) -> list[WaitingGroup]:
        c = deferred_calls
        query = (
            select(
                c.c.provider, c.c.model, c.c.endpoint, func.count(), func.min(c.c.created_at), func.min(c.c.deadline)
            )
            .where(c.c.state == CALL_QUEUED)
            .group_by(c.c.provider, c.c.model, c.c.endpoint)
            .order_by(c.c.provider, c.c.model, c.c.endpoint)
        )
        with self._db.reading() as connection:
            rows = connection.execute(query).all()
        return [
            WaitingGroup(
                provider=r[0],
                model=r[1],
                endpoint=r[2],
                waiting=int(r[3]),
                oldest=_aware(r[4]),
                earliest_deadline=None if r[5] is None else _aware(r[5]),
            )
            for r in rows
        ]

    def depth(self) -> tuple[int, datetime | None]:
        """How many calls wait, and since when the oldest has."""
        c = deferred_calls
        with self._db.reading() as connection:
            count, oldest = connection.execute(
                select(func.count(), func.min(c.c.created_at)).where(c.c.state == CALL_QUEUED)
            ).one()
        return int(count), None if oldest is None else _aware(oldest)

    def claim(
        self,
        group: WaitingGroup,
        *,
        worker: str,
        limit: int,
        plan: Callable[[list[WaitingCall]], list[FlushPart]],
        only: Sequence[str] | None = None,
    ) -> list[FlushRow]:
        """Take up to ``limit`` of the group's waiting calls (oldest first) into new flushes, one per part.

        ``only`` restricts the claim to these call ids (a call that cannot wait for its group).
        """
        c = deferred_calls

        def work(connection: Connection) -> list[FlushRow]:
            now = self._clock()
            query = (
                select(c.c.call_id, c.c.deadline)
                .where(
                    c.c.state == CALL_QUEUED,
                    c.c.provider == group.provider,
                    c.c.model == group.model,
                    c.c.endpoint == group.endpoint,
                )
                .order_by(c.c.created_at, c.c.call_id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            if only is not None:
                query = query.where(c.c.call_id.in_(list(only)))
            waiting = [WaitingCall(r.call_id, r.deadline) for r in connection.execute(query)]
            if not waiting:
                return []
            flushes: list[FlushRow] = []
            for part in plan(waiting):
                flush = FlushRow(
                    flush_id=f"dfl-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}",
                    provider=group.provider,
                    model=group.model,
                    endpoint=group.endpoint,
                    lane=part.lane,
                    state=FLUSH_CLAIMED,
                    worker=worker,
                    claimed_at=now,
                    call_count=len(part.call_ids),
                    earliest_deadline=part.earliest_deadline,
                    reason=part.reason,
                    created_at=now,
                )
                connection.execute(insert(deferred_flushes).values(**_flush_values(flush, now)))
                claimed = 0
                for chunk in _chunks(part.call_ids):
                    claimed += connection.execute(
                        update(c)
                        .where(c.c.call_id.in_(chunk), c.c.state == CALL_QUEUED)
                        .values(state=CALL_CLAIMED, flush_id=flush.flush_id, updated_at=now)
                    ).rowcount
                    for call_id in chunk:
                        if call_id in part.warnings:
                            connection.execute(
                                update(c).where(c.c.call_id == call_id).values(warning=part.warnings[call_id])
                            )
                if claimed != len(part.call_ids):
                    # Another flusher got some of them first: roll the whole claim back.
                    raise _LostRace(f"claimed {claimed} of {len(part.call_ids)} calls for {flush.flush_id}")
                flushes.append(flush)
            return flushes

        try:
            return self._db.write(work)
        except _LostRace:
            return []

    def take_over_stale(self, *, worker: str, lease: timedelta) -> list[FlushRow]:
        """Flushes claimed longer ago than ``lease`` and never submitted, now owned by ``worker``."""
        f = deferred_flushes
        now = self._clock()
        with self._db.reading() as connection:
            stale = connection.execute(
                select(f).where(f.c.state == FLUSH_CLAIMED, f.c.claimed_at <= now - lease).order_by(f.c.created_at)
            ).all()
        taken: list[FlushRow] = []
        for row in stale:
            old = _flush_row(row._mapping)

            def work(connection: Connection, old: FlushRow = old) -> int:
                return connection.execute(
                    update(f)
                    .where(
                        f.c.flush_id == old.flush_id,
                        f.c.state == FLUSH_CLAIMED,
                        f.c.worker == old.worker,
                        f.c.claimed_at == old.claimed_at,
                    )
                    .values(worker=worker, claimed_at=now, updated_at=now)
                ).rowcount

            if self._db.write(work):
                taken.append(FlushRow(**{**_flush_fields(old), "worker": worker, "claimed_at": now}))
        return taken

    def calls_of(self, flush_id: str) -> list[CallRow]:
        c = deferred_calls
        with self._db.reading() as connection:
            rows = connection.execute(select(c).where(c.c.flush_id == flush_id).order_by(c.c.call_id)).all()
        return [_call_row(r._mapping) for r in rows]

    def mark_submitted(self, flush_id: str, *, worker: str) -> bool:
        """The flush's batch exists (or its sync run is recorded): its calls leave the buffer."""
        f, c = deferred_flushes, deferred_calls

        def work(connection: Connection) -> bool:
            now = self._clock()
            moved = connection.execute(
                update(f)
                .where(f.c.flush_id == flush_id, f.c.state == FLUSH_CLAIMED, f.c.worker == worker)
                .values(state=FLUSH_SUBMITTED, updated_at=now)
            ).rowcount
            if moved:
                connection.execute(
                    update(c)
                    .where(c.c.flush_id == flush_id, c.c.state == CALL_CLAIMED)
                    .values(state=CALL_FLUSHED, updated_at=now)
                )
            return bool(moved)

        return self._db.write(work)

    def mark_collected(self, flush_id: str) -> bool:
        f = deferred_flushes

        def work(connection: Connection) -> bool:
            return bool(
                connection.execute(
                    update(f)
                    .where(f.c.flush_id == flush_id, f.c.state == FLUSH_SUBMITTED)
                    .values(state=FLUSH_COLLECTED, updated_at=self._clock())
                ).rowcount
            )

        return self._db.write(work)

    def flushes(self, states: Iterable[str] | None = None, *, since: datetime | None = None) -> list[FlushRow]:
        f = deferred_flushes
        query = select(f).order_by(f.c.created_at, f.c.flush_id)
        if states is not None:
            query = query.where(f.c.state.in_(sorted(set(states))))
        if since is not None:
            query = query.where(f.c.created_at >= since)
        with self._db.reading() as connection:
            return [_flush_row(r._mapping) for r in connection.execute(query)]

    def warned_calls(self, flush_ids: Sequence[str]) -> list[tuple[str, str]]:
        """(call id, warning) of the calls in these flushes whose deadline even the sync lane could not meet."""
        c = deferred_calls
        found: list[tuple[str, str]] = []
        for chunk in _chunks(list(flush_ids)):
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
        return [max(timedelta(0), _aware(ended) - _aware(created)) for created, ended in rows]

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
        for chunk in _chunks(list(dict.fromkeys(call_ids))):
            with self._db.reading() as connection:
                calls = [_call_row(r._mapping) for r in connection.execute(select(c).where(c.c.call_id.in_(chunk)))]
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


_ENQUEUE_COLUMNS = (
    "call_id",
    "idempotency_key",
    "provider",
    "model",
    "endpoint",
    "body",
    "deadline",
    "state",
    "flush_id",
    "warning",
    "created_at",
    "updated_at",
)


class SqliteEnqueue:
    """The enqueue on SQLite without SQLAlchemy in the way: one prepared INSERT and a commit per call.

    A call must be durable before ``Router.call`` returns, so every call is its own transaction;
    through SQLAlchemy Core the per-call overhead (checkout, compile, events) was ten times the
    insert itself. One connection per thread, with the ledger's own settings (WAL, NORMAL sync,
    busy timeout); times are stored exactly as SQLAlchemy stores them, so every other reader is
    unchanged.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        placeholders = ", ".join("?" for _ in _ENQUEUE_COLUMNS)
        self._sql = (
            f"INSERT INTO {deferred_calls.name} ({', '.join(_ENQUEUE_COLUMNS)}) VALUES ({placeholders}) "
            "ON CONFLICT DO NOTHING"
        )

    def insert(self, values: dict[str, Any]) -> bool:
        """Insert and commit; False when the idempotency key (or id) was already there."""
        deadline = values["deadline"]
        created = _sqlite_time(values["created_at"])
        params = (
            values["call_id"],
            values["idempotency_key"],
            values["provider"],
            values["model"],
            values["endpoint"],
            values["body"],
            None if deadline is None else _sqlite_time(deadline),
            values["state"],
            values["flush_id"],
            values["warning"],
            created,
            created if values["updated_at"] is values["created_at"] else _sqlite_time(values["updated_at"]),
        )
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                inserted = connection.execute(self._sql, params).rowcount
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger refused a deferred call: {exc}") from exc
        return inserted > 0

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.database, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()


def _sqlite_time(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text for the naive UTC value ``UTCDateTime`` binds."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class _LostRace(Exception):
    """Another flusher claimed some of the same calls between our read and our update."""


def _chunks(values: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _ID_CHUNK):
        yield list(values[start : start + _ID_CHUNK])


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _aware(value: datetime) -> datetime:
    """SQLite hands aggregates (MIN) back as naive UTC; rows already come back aware."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _call_row(m: Any) -> CallRow:
    return CallRow(
        call_id=m["call_id"],
        idempotency_key=m["idempotency_key"],
        provider=m["provider"],
        model=m["model"],
        endpoint=m["endpoint"],
        body=m["body"],
        deadline=m["deadline"],
        state=m["state"],
        flush_id=m["flush_id"],
        warning=m["warning"],
        created_at=m["created_at"],
    )


def _flush_fields(row: FlushRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in FlushRow.__slots__}


def _flush_values(row: FlushRow, now: datetime) -> dict[str, Any]:
    values = _flush_fields(row)
    values["lane"] = row.lane.value
    values["updated_at"] = now
    return values


def _flush_row(m: Any) -> FlushRow:
    return FlushRow(
        flush_id=m["flush_id"],
        provider=m["provider"],
        model=m["model"],
        endpoint=m["endpoint"],
        lane=Lane(m["lane"]),
        state=m["state"],
        worker=m["worker"],
        claimed_at=m["claimed_at"],
        call_count=m["call_count"],
        earliest_deadline=m["earliest_deadline"],
        reason=m["reason"],
        created_at=m["created_at"],
    )
