"""The ledger: durable state of items, attempts, submit intents and batches.

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

import itertools
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Connection,
    and_,
    bindparam,
    case,
    delete,
    event,
    func,
    insert,
    inspect,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError
from sqlalchemy.schema import CreateTable

from batch_pipelines.core.batches import BatchInfo
from batch_pipelines.core.errors import LedgerError
from batch_pipelines.core.outcomes import ItemOutcome
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.core.status import TERMINAL_STATUSES, BatchStatus
from batch_pipelines.core.usage import Usage
from batch_pipelines.ledger.bulk import BulkWriter
from batch_pipelines.ledger.engine import (
    WRITE_OPTION,
    create_ledger_engine,
    default_ledger_path,
    mask_url,
    parse_ledger_url,
    sqlite_url,
)
from batch_pipelines.ledger.rows import (
    ITEM_STATUSES,
    RETRYABLE_STATUSES,
    AttemptGroup,
    BatchRow,
    IntentRow,
    ItemRow,
    ModelTotals,
    PartitionTotals,
    batch_errors_from_json,
    batch_errors_to_json,
)
from batch_pipelines.ledger.schema import (
    INTENT_CREATED,
    INTENT_SUBMITTED,
    INTENT_UPLOADED,
    ITEM_STAGE_COLUMNS,
    PENDING,
    RECONCILE_DONE,
    RECONCILE_NONE,
    RECONCILE_RUNNING,
    SCHEMA_VERSION,
    SUBMITTED,
    USAGE_COLUMNS,
    UTCDateTime,
    attempts,
    item_stage,
    key_stage,
    ledger_meta,
    metadata,
    outcome_stage,
    submit_intents,
)
from batch_pipelines.ledger.schema import batches as batches_t
from batch_pipelines.ledger.schema import items as items_t

T = TypeVar("T")

_ZERO = Decimal(0)
# Attempts the deadline watchdog moved to the sync lane carry batch keys with this prefix.
PROMOTION_KEY_PREFIX = "promo-"
_NO_COST = (_ZERO, _ZERO)
_TERMINAL_VALUES = tuple(sorted(s.value for s in TERMINAL_STATUSES))
# PostgreSQL may pick one of two workers that lock the same rows in different orders as a
# deadlock victim; the chunk is idempotent, so it is simply run again.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
_MAX_TRANSIENT_RETRIES = 8
# On PostgreSQL, refresh planner statistics after a call that changed at least this many rows.
_ANALYZE_AFTER_ROWS = 10_000
# Any 64-bit constant: serialises schema creation between processes on PostgreSQL.
_SCHEMA_LOCK_KEY = 0x6270_6C65_6467_6572

_STAGE_COLUMNS = (
    "custom_id",
    "kind",
    "reason",
    "status_code",
    "error_code",
    *USAGE_COLUMNS,
    "cost_usd",
    "sync_equivalent_usd",
)


def _chunks(values: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(values)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _estimate(metadata: Mapping[str, Any]) -> int | None:
    value = metadata.get("estimated_input_tokens")
    return None if value is None else int(value)


def _check_partition(job: str, partition: str) -> None:
    if not job or not partition:
        raise LedgerError(f"job and partition must be non-empty (got job={job!r}, partition={partition!r})")


class Ledger:
    """Durable state of a batch_pipelines deployment; safe to share between threads.

    ``url`` is ``sqlite:///path`` or ``postgresql+psycopg://...``; ``None`` means the default
    SQLite file (see ``default_ledger_path``). The schema is created on first use.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        chunk_size: int = 5000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self._url = parse_ledger_url(url if url is not None else sqlite_url(default_ledger_path()))
        self.url_for_display: str = mask_url(self._url)
        self.chunk_size = chunk_size
        self._clock = clock or _utcnow
        self._engine = create_ledger_engine(self._url)
        self.dialect: str = self._engine.dialect.name
        self._insert = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
        event.listen(self._engine, "connect", self._create_stage_tables)
        self._ensure_schema()
        dialect = self._engine.dialect
        # SQLite takes new items straight into bp_items; PostgreSQL copies them into a stage first.
        item_target = items_t if self.dialect == "sqlite" else item_stage
        self._item_writer = BulkWriter(item_target, [item_target.c[name] for name in ITEM_STAGE_COLUMNS], dialect)
        self._outcome_writer = BulkWriter(outcome_stage, [outcome_stage.c[name] for name in _STAGE_COLUMNS], dialect)
        self._key_writer = BulkWriter(key_stage, [key_stage.c.custom_id], dialect)

    @classmethod
    def for_path(cls, path: Any, **kwargs: Any) -> Ledger:
        """A ledger in the SQLite file at ``path`` (created with its directory if missing)."""
        return cls(sqlite_url(path), **kwargs)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for instrumentation; write through the Ledger's methods)."""
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.url_for_display!r})"

    # --- connections and transactions -------------------------------------------------------

    def _create_stage_tables(self, dbapi_connection: Any, _record: Any) -> None:
        # Created once per pooled connection, outside any ledger transaction, so that a rolled
        # back chunk can never take the scratch tables with it.
        cursor = dbapi_connection.cursor()
        stages = (outcome_stage, key_stage) if self.dialect == "sqlite" else (item_stage, outcome_stage, key_stage)
        for table in stages:
            cursor.execute(str(CreateTable(table, if_not_exists=True).compile(dialect=self._engine.dialect)))
        cursor.close()
        if self.dialect != "sqlite":
            dbapi_connection.commit()

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._guard(), self._engine.connect() as connection:
            yield connection

    def _write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one write transaction, again if the database chose it as a deadlock victim."""
        for attempt in itertools.count():
            try:
                with self._guard(), self._engine.connect() as connection:
                    connection = connection.execution_options(**{WRITE_OPTION: True})
                    with connection.begin():
                        return work(connection)
            except LedgerError as exc:
                cause = exc.__cause__
                transient = isinstance(cause, DBAPIError) and _sqlstate(cause) in _TRANSIENT_SQLSTATES
                if not transient or attempt >= _MAX_TRANSIENT_RETRIES:
                    raise
                time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
        raise AssertionError("unreachable")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Database errors become LedgerErrors that name the ledger (password masked)."""
        try:
            yield
        except OperationalError as exc:
            raise LedgerError(
                f"ledger {self.url_for_display} is unavailable: {_first_line(exc.orig)}", url=self.url_for_display
            ) from exc
        except DBAPIError as exc:
            raise LedgerError(
                f"ledger {self.url_for_display} refused a statement: {_first_line(exc.orig)}",
                url=self.url_for_display,
            ) from exc
        except StatementError as exc:  # a value our column types refused (naive datetime, NaN money)
            raise LedgerError(f"ledger refused a value: {_first_line(exc.orig)}") from exc
        except ValueError as exc:  # the same, raised by the SQLite bulk path without SQLAlchemy's wrapper
            raise LedgerError(f"ledger refused a value: {exc}") from exc

    def _ensure_schema(self) -> None:
        def work(connection: Connection) -> None:
            if self.dialect == "postgresql":
                connection.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
            found = None
            if inspect(connection).has_table(ledger_meta.name):
                found = connection.scalar(select(ledger_meta.c.value).where(ledger_meta.c.key == "schema_version"))
            if found is not None:
                version = int(found)
                if version > SCHEMA_VERSION:
                    raise LedgerError(
                        f"ledger {self.url_for_display} has schema version {version}, newer than this "
                        f"batch_pipelines' version {SCHEMA_VERSION}; upgrade batch_pipelines to use it",
                        found_version=version,
                        code_version=SCHEMA_VERSION,
                    )
                if version < SCHEMA_VERSION:
                    raise LedgerError(
                        f"ledger {self.url_for_display} has schema version {version} and this code knows no "
                        f"migration from it to version {SCHEMA_VERSION}",
                        found_version=version,
                        code_version=SCHEMA_VERSION,
                    )
                return
            metadata.create_all(connection, checkfirst=True)
            connection.execute(insert(ledger_meta).values(key="schema_version", value=str(SCHEMA_VERSION)))

        self._write(work)

    def schema_version(self) -> int:
        with self._reading() as connection:
            return int(connection.scalar(select(ledger_meta.c.value).where(ledger_meta.c.key == "schema_version")))

    def _unindexed(self, column: Any) -> Any:
        """``column`` as a condition SQLite's planner will not use an index for.

        Without stats SQLite believes a (job, partition, status) index range is small and scans
        it, testing each row against the staged chunk: a whole-partition scan per chunk. The
        unary ``+`` leaves it one plan: seek each staged custom_id by primary key.
        """
        if self.dialect != "sqlite":
            return column
        return literal_column(f"+{column.table.name}.{column.name}", type_=column.type)

    def _stage_keys(self, connection: Connection, custom_ids: Sequence[str]) -> None:
        connection.execute(delete(key_stage))
        self._key_writer.write(connection, [(custom_id,) for custom_id in dict.fromkeys(custom_ids)])
        self._analyze(connection, key_stage)

    def _analyze(self, connection: Connection, table: Any) -> None:
        """Refresh PostgreSQL's statistics of ``table`` (a no-op on SQLite).

        Without them the planner believes a freshly loaded table holds a handful of rows and
        drives each chunk's join from a whole-partition index scan instead of from the chunk.
        Stage tables are analysed per chunk (a few ms); ledger tables after bulk changes.
        """
        if self.dialect == "postgresql":
            connection.exec_driver_sql(f"ANALYZE {self._engine.dialect.identifier_preparer.format_table(table)}")

    def _analyze_after_bulk(self, changed: int, *tables: Any) -> None:
        if self.dialect == "postgresql" and changed >= _ANALYZE_AFTER_ROWS:
            self._write(lambda connection: [self._analyze(connection, table) for table in tables])

    def _insert_items(self, connection: Connection, rows: list[tuple[Any, ...]]) -> int:
        if self.dialect == "sqlite":
            return self._item_writer.write(connection, rows)
        connection.execute(delete(item_stage))
        self._item_writer.write(connection, rows)
        columns = [items_t.c[name] for name in ITEM_STAGE_COLUMNS]
        return connection.execute(
            self._insert(items_t)
            .from_select(columns, select(*(item_stage.c[name] for name in ITEM_STAGE_COLUMNS)))
            .on_conflict_do_nothing()
            .execution_options(preserve_rowcount=True)
        ).rowcount

    # --- items -----------------------------------------------------------------------------

    def record_items(self, job: str, partition: str, requests: Iterable[LLMRequest], *, provider: str) -> int:
        """Add pending items, one per custom_id; ones already recorded are left as they are.

        Streams: a generator of any length is consumed one chunk at a time. Returns how many
        items were new.
        """
        _check_partition(job, partition)
        inserted = 0
        for chunk in _chunks(requests, self.chunk_size):
            now = self._clock()
            rows = [
                (
                    job,
                    partition,
                    r.custom_id,
                    provider,
                    r.model,
                    r.endpoint.value,
                    r.lane.value,
                    PENDING,
                    0,
                    r.deadline,
                    _estimate(r.metadata) if r.metadata else None,
                    now,
                    now,
                )
                for r in chunk
            ]
            inserted += self._write(lambda connection, rows=rows: self._insert_items(connection, rows))
        self._analyze_after_bulk(inserted, items_t)
        return inserted

    def assign_items(self, job: str, partition: str, custom_ids: Iterable[str], *, batch_key: str, lane: Lane) -> int:
        """Pending items -> submitted under ``batch_key`` on ``lane``, one more attempt each.

        Replaying the same call changes nothing. Returns how many items moved. ``batch_key``
        must be fresh for each submission: reusing a key an item was already tried under
        raises LedgerError.
        """
        return self._assign(job, partition, custom_ids, batch_key, Lane(lane), (PENDING,))

    def promote_items(
        self, job: str, partition: str, custom_ids: Iterable[str], *, batch_key: str, lane: Lane = Lane.SYNC
    ) -> int:
        """Pending or submitted items -> submitted under a new ``batch_key`` (the deadline path).

        The attempt under the old batch stays open: if that batch still answers, its cost is
        recorded (we were charged) but the item follows the new key.
        """
        return self._assign(job, partition, custom_ids, batch_key, Lane(lane), (PENDING, SUBMITTED))

    def _assign(
        self,
        job: str,
        partition: str,
        custom_ids: Iterable[str],
        batch_key: str,
        lane: Lane,
        from_statuses: tuple[str, ...],
    ) -> int:
        _check_partition(job, partition)
        if not batch_key:
            raise LedgerError("batch_key must be non-empty")
        i, hint = items_t, self._unindexed
        in_chunk = and_(i.c.job == job, i.c.partition == partition, i.c.custom_id.in_(select(key_stage.c.custom_id)))
        moved_total = 0
        for chunk in _chunks(custom_ids, self.chunk_size):

            def work(connection: Connection, chunk: list[str] = chunk) -> int:
                now = self._clock()
                self._stage_keys(connection, chunk)
                moved = connection.execute(
                    update(i)
                    .where(
                        in_chunk, hint(i.c.status).in_(from_statuses), hint(i.c.batch_key).is_distinct_from(batch_key)
                    )
                    .values(
                        status=SUBMITTED,
                        batch_key=batch_key,
                        lane=lane.value,
                        attempts=i.c.attempts + 1,
                        updated_at=now,
                    )
                ).rowcount
                opened = connection.execute(
                    self._insert(attempts)
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
                        ).where(in_chunk, hint(i.c.batch_key) == batch_key, hint(i.c.status) == SUBMITTED),
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

            moved_total += self._write(work)
        self._analyze_after_bulk(moved_total, items_t, attempts)
        return moved_total

    def record_outcomes(
        self,
        job: str,
        partition: str,
        batch_key: str,
        outcomes: Iterable[ItemOutcome],
        costs: Mapping[str, tuple[Decimal, Decimal]] | None = None,
        *,
        lane: Lane = Lane.BATCH,
    ) -> int:
        """Close each item's attempt under ``batch_key`` with its outcome, usage and cost.

        ``costs`` maps custom_id -> (cost_usd, sync_equivalent_usd). An attempt is closed once:
        replays, outcomes for items never assigned to ``batch_key`` and a second outcome for
        the same custom_id change nothing. The item moves to the outcome's kind only while it
        is still submitted under ``batch_key``. Returns how many items moved.
        """
        _check_partition(job, partition)
        lane_value = Lane(lane).value
        moved_total = 0
        for chunk in _chunks(outcomes, self.chunk_size):
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

            moved_total += self._write(work)
        return moved_total

    def _close_attempts(
        self, connection: Connection, job: str, partition: str, batch_key: str, lane: str, rows: list[tuple[Any, ...]]
    ) -> int:
        now = self._clock()
        token = uuid.uuid4().hex
        s, a, i, hint = outcome_stage, attempts, items_t, self._unindexed
        connection.execute(delete(s))
        self._outcome_writer.write(connection, rows)
        self._analyze(connection, outcome_stage)
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
                hint(i.c.status) == SUBMITTED,
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
        """Undo an assignment that never ran (the batch was refused, e.g. queue full): items
        submitted under ``batch_key`` go back to pending with the attempt given back, and the
        batch's open attempts are deleted (no answer, no cost). Returns items released.
        """
        _check_partition(job, partition)
        i, a = items_t, attempts

        def work(connection: Connection) -> int:
            connection.execute(
                delete(a).where(
                    a.c.job == job, a.c.partition == partition, a.c.batch_key == batch_key, a.c.outcome.is_(None)
                )
            )
            return connection.execute(
                update(i)
                .where(i.c.job == job, i.c.partition == partition, i.c.status == SUBMITTED, i.c.batch_key == batch_key)
                .values(status=PENDING, batch_key=None, attempts=i.c.attempts - 1, updated_at=self._clock())
            ).rowcount

        return self._write(work)

    def mark_for_retry(self, job: str, partition: str, custom_ids: Iterable[str], *, lane: Lane | None = None) -> int:
        """Retryable terminal items (any outcome but succeeded) -> pending, optionally on another lane.

        Attempts and accumulated cost stay; the item leaves its batch. Returns items moved.
        """
        _check_partition(job, partition)
        i = items_t
        values: dict[str, Any] = {"status": PENDING, "batch_key": None}
        if lane is not None:
            values["lane"] = Lane(lane).value
        retryable = sorted(RETRYABLE_STATUSES)
        moved_total = 0
        for chunk in _chunks(custom_ids, self.chunk_size):

            def work(connection: Connection, chunk: list[str] = chunk) -> int:
                self._stage_keys(connection, chunk)
                return connection.execute(
                    update(i)
                    .where(
                        i.c.job == job,
                        i.c.partition == partition,
                        i.c.custom_id.in_(select(key_stage.c.custom_id)),
                        self._unindexed(i.c.status).in_(retryable),
                    )
                    .values(updated_at=self._clock(), **values)
                ).rowcount

            moved_total += self._write(work)
        return moved_total

    def get_item(self, job: str, partition: str, custom_id: str) -> ItemRow | None:
        i = items_t
        with self._reading() as connection:
            row = connection.execute(
                select(i).where(i.c.job == job, i.c.partition == partition, i.c.custom_id == custom_id)
            ).first()
        return None if row is None else _item_row(row)

    def items(
        self,
        job: str,
        partition: str,
        *,
        statuses: Iterable[str] | None = None,
        limit: int | None = None,
        batch_key: str | None = None,
    ) -> list[ItemRow]:
        """Items of a partition in custom_id order, optionally only some statuses, at most ``limit``."""
        rows = self.iter_items(job, partition, statuses=statuses, batch_key=batch_key)
        return list(rows if limit is None else itertools.islice(rows, limit))

    def iter_items(
        self,
        job: str,
        partition: str,
        *,
        statuses: Iterable[str] | None = None,
        batch_key: str | None = None,
        batch_key_prefix: str | None = None,
    ) -> Iterator[ItemRow]:
        """Items in custom_id order, read one chunk per short query (no transaction held open)."""
        i, hint = items_t, self._unindexed
        conditions = [i.c.job == job, i.c.partition == partition]
        # Pages walk the primary key in order; a status-index plan would sort the partition per page.
        if statuses is not None:
            wanted = sorted({_status_value(s) for s in statuses})
            conditions.append(hint(i.c.status).in_(wanted))
        if batch_key is not None:
            conditions.append(hint(i.c.batch_key) == batch_key)
        if batch_key_prefix is not None:
            conditions.append(hint(i.c.batch_key).startswith(batch_key_prefix, autoescape=True))
        after: str | None = None
        while True:
            query = select(i).where(*conditions).order_by(i.c.custom_id).limit(self.chunk_size)
            if after is not None:
                query = query.where(i.c.custom_id > after)
            with self._reading() as connection:
                page = connection.execute(query).all()
            for row in page:
                yield _item_row(row)
            if len(page) < self.chunk_size:
                return
            after = page[-1].custom_id

    def item_counts(self, job: str, partition: str) -> dict[str, int]:
        """status -> number of items (statuses with no items are absent)."""
        i = items_t
        with self._reading() as connection:
            rows = connection.execute(
                select(i.c.status, func.count()).where(i.c.job == job, i.c.partition == partition).group_by(i.c.status)
            ).all()
        return {status: int(count) for status, count in rows}

    def partition_totals(self, job: str, partition: str) -> PartitionTotals:
        """Item counts by status and exact sums over the partition's attempts, also per model."""
        a = attempts
        sums = [func.sum(a.c[name]) for name in USAGE_COLUMNS]
        with self._reading() as connection:
            counts = {
                status: int(count)
                for status, count in connection.execute(
                    select(items_t.c.status, func.count())
                    .where(items_t.c.job == job, items_t.c.partition == partition)
                    .group_by(items_t.c.status)
                )
            }
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
        """Closed attempts summed by (lane, model, superseded): the evidence for promotion costs."""
        a, i = attempts, items_t
        superseded = and_(a.c.outcome == "succeeded", i.c.batch_key.is_distinct_from(a.c.batch_key))
        flag = case((superseded, 1), else_=0).label("superseded")
        promoted = case((a.c.batch_key.like(f"{PROMOTION_KEY_PREFIX}%"), 1), else_=0).label("promoted")
        sums = [func.sum(a.c[name]) for name in USAGE_COLUMNS]
        with self._reading() as connection:
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
        """How many items still wait on these batches, and the earliest deadline among them."""
        if not batch_keys:
            return 0, None
        i = items_t
        with self._reading() as connection:
            count, earliest = connection.execute(
                select(func.count(), func.min(i.c.deadline)).where(
                    i.c.job == job,
                    i.c.partition == partition,
                    i.c.status == SUBMITTED,
                    i.c.batch_key.in_(list(batch_keys)),
                )
            ).one()
        return int(count), earliest

    # --- submit intents --------------------------------------------------------------------

    def create_intent(
        self,
        intent_key: str,
        *,
        job: str,
        partition: str,
        provider: str,
        model: str,
        endpoint: str,
        fingerprint: str,
        item_count: int,
        round: int = 0,
    ) -> IntentRow:
        """The intent for ``intent_key``, created if new; an existing one must have the same fingerprint."""
        _check_partition(job, partition)
        now = self._clock()

        def work(connection: Connection) -> IntentRow:
            connection.execute(
                self._insert(submit_intents)
                .values(
                    intent_key=intent_key,
                    job=job,
                    partition=partition,
                    provider=provider,
                    model=model,
                    endpoint=_endpoint_value(endpoint),
                    fingerprint=fingerprint,
                    item_count=item_count,
                    round=round,
                    status=INTENT_CREATED,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing()
            )
            row = _intent_row(
                connection.execute(select(submit_intents).where(submit_intents.c.intent_key == intent_key)).one()
            )
            if row.fingerprint != fingerprint:
                raise LedgerError(
                    f"submit intent {intent_key!r} exists with fingerprint {row.fingerprint!r}, not "
                    f"{fingerprint!r}: the shard's content changed since it was first submitted",
                    intent_key=intent_key,
                    stored_fingerprint=row.fingerprint,
                    fingerprint=fingerprint,
                )
            return row

        return self._write(work)

    def get_intent(self, intent_key: str) -> IntentRow | None:
        with self._reading() as connection:
            row = connection.execute(select(submit_intents).where(submit_intents.c.intent_key == intent_key)).first()
        return None if row is None else _intent_row(row)

    def intents(self, job: str, partition: str) -> list[IntentRow]:
        si = submit_intents
        with self._reading() as connection:
            rows = connection.execute(
                select(si)
                .where(si.c.job == job, si.c.partition == partition)
                .order_by(si.c.created_at, si.c.intent_key)
            ).all()
        return [_intent_row(row) for row in rows]

    def mark_intent_uploaded(self, intent_key: str, file_id: str) -> None:
        """Record the uploaded input file; a re-upload before submission replaces it."""
        si = submit_intents

        def work(connection: Connection) -> None:
            changed = connection.execute(
                update(si)
                .where(si.c.intent_key == intent_key, si.c.status != INTENT_SUBMITTED)
                .values(status=INTENT_UPLOADED, file_id=file_id, updated_at=self._clock())
            ).rowcount
            if changed:
                return
            row = self._intent_in(connection, intent_key)
            if row.file_id != file_id:
                raise LedgerError(
                    f"submit intent {intent_key!r} was already submitted with file {row.file_id!r}; "
                    f"refusing to record file {file_id!r}",
                    intent_key=intent_key,
                )

        self._write(work)

    def mark_intent_submitted(self, intent_key: str, vendor_batch_id: str) -> None:
        """Record the batch created for this intent; a different batch id for it is an error (paying twice)."""
        si = submit_intents

        def work(connection: Connection) -> None:
            changed = connection.execute(
                update(si)
                .where(
                    si.c.intent_key == intent_key,
                    or_(si.c.vendor_batch_id.is_(None), si.c.vendor_batch_id == vendor_batch_id),
                )
                .values(status=INTENT_SUBMITTED, vendor_batch_id=vendor_batch_id, updated_at=self._clock())
            ).rowcount
            if changed:
                return
            row = self._intent_in(connection, intent_key)
            raise LedgerError(
                f"submit intent {intent_key!r} is already attached to batch {row.vendor_batch_id!r}; "
                f"refusing to attach {vendor_batch_id!r} (that would pay twice for one shard)",
                intent_key=intent_key,
                vendor_batch_id=row.vendor_batch_id,
                other_vendor_batch_id=vendor_batch_id,
            )

        self._write(work)

    def _intent_in(self, connection: Connection, intent_key: str) -> IntentRow:
        row = connection.execute(select(submit_intents).where(submit_intents.c.intent_key == intent_key)).first()
        if row is None:
            raise LedgerError(f"no submit intent {intent_key!r} in the ledger", intent_key=intent_key)
        return _intent_row(row)

    # --- batches ---------------------------------------------------------------------------

    def record_batch(self, info: BatchInfo, *, intent_key: str | None, job: str, partition: str) -> None:
        """Insert or refresh a batch by (provider, vendor_batch_id).

        A terminal status is never overwritten by a non-terminal one (a stale poll).
        """
        _check_partition(job, partition)
        now = self._clock()
        values = {
            **_batch_values(info),
            "job": job,
            "partition": partition,
            "intent_key": intent_key,
            "recorded_at": now,
            "updated_at": now,
        }
        stmt = self._insert(batches_t).values(**values)
        refreshed = {name: stmt.excluded[name] for name in (*_batch_values(info), "updated_at")}
        refreshed["intent_key"] = func.coalesce(batches_t.c.intent_key, stmt.excluded.intent_key)
        stmt = stmt.on_conflict_do_update(
            index_elements=[batches_t.c.provider, batches_t.c.vendor_batch_id],
            set_=refreshed,
            where=or_(batches_t.c.status.not_in(_TERMINAL_VALUES), stmt.excluded.status.in_(_TERMINAL_VALUES)),
        )
        self._write(lambda connection: connection.execute(stmt))

    def update_batches(self, infos: Iterable[BatchInfo]) -> int:
        """Refresh status, counts, file ids and times of known batches in one statement per chunk.

        Unknown batches are ignored, and so is a non-terminal status for a batch already
        terminal. Returns how many batches were updated.
        """
        b = batches_t
        fields = tuple(name for name in _batch_values_names() if name not in ("provider", "vendor_batch_id"))
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
        for chunk in _chunks(infos, self.chunk_size):
            now = self._clock()
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
            updated += self._write(
                lambda connection, stmt=stmt, params=params: connection.execute(stmt, params).rowcount
            )
        return updated

    def get_batch(self, provider: str, vendor_batch_id: str) -> BatchRow | None:
        with self._reading() as connection:
            row = connection.execute(
                select(batches_t).where(
                    batches_t.c.provider == provider, batches_t.c.vendor_batch_id == vendor_batch_id
                )
            ).first()
        return None if row is None else _batch_row(row)

    def batches(self, job: str, partition: str) -> list[BatchRow]:
        return self._batches(batches_t.c.job == job, batches_t.c.partition == partition)

    def open_batches(self, provider: str | None = None) -> list[BatchRow]:
        """Batches whose last recorded status is not terminal (what a poller must look at)."""
        conditions = [batches_t.c.status.not_in(_TERMINAL_VALUES)]
        if provider is not None:
            conditions.append(batches_t.c.provider == provider)
        return self._batches(*conditions)

    def unreconciled_batches(self, provider: str | None = None) -> list[BatchRow]:
        """Terminal batches whose results have not been reconciled yet."""
        conditions = [batches_t.c.status.in_(_TERMINAL_VALUES), batches_t.c.reconcile_state != RECONCILE_DONE]
        if provider is not None:
            conditions.append(batches_t.c.provider == provider)
        return self._batches(*conditions)

    def active_partitions(self, job: str, *, reconciled_since: datetime | None = None) -> list[str]:
        """Partitions of ``job`` with a batch still running or not yet reconciled, in order.

        With ``reconciled_since``, also those with a batch reconciled since then: a results run
        that died after collecting may have left their items waiting on no batch.
        """
        b = batches_t
        condition = b.c.reconcile_state != RECONCILE_DONE
        if reconciled_since is not None:
            condition = or_(condition, b.c.updated_at >= reconciled_since)
        with self._reading() as connection:
            rows = connection.execute(
                select(b.c.partition).where(b.c.job == job, condition).distinct().order_by(b.c.partition)
            ).all()
        return [row.partition for row in rows]

    def _batches(self, *conditions: Any) -> list[BatchRow]:
        with self._reading() as connection:
            rows = connection.execute(
                select(batches_t).where(*conditions).order_by(batches_t.c.recorded_at, batches_t.c.vendor_batch_id)
            ).all()
        return [_batch_row(row) for row in rows]

    def claim_batch_for_reconcile(
        self,
        provider: str,
        vendor_batch_id: str,
        *,
        worker: str,
        stale_after: timedelta = timedelta(minutes=30),
        now: datetime | None = None,
    ) -> bool:
        """Take the right to reconcile a batch: True for this worker, False if another holds it.

        A claim older than ``stale_after`` is presumed dead and can be taken over; the same
        worker claiming again gets True. A reconciled batch is never claimed again.
        """
        b = batches_t
        at = now or self._clock()

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
                self._require_batch(connection, provider, vendor_batch_id)
            return bool(taken)

        return self._write(work)

    def mark_batch_reconciled(self, provider: str, vendor_batch_id: str, *, worker: str | None = None) -> bool:
        """Finish this worker's claim; False if the claim was lost to another worker meanwhile.

        Without ``worker`` the batch is marked reconciled whoever holds it (single-worker use).
        """
        return self._end_claim(provider, vendor_batch_id, worker, RECONCILE_DONE)

    def release_batch_claim(self, provider: str, vendor_batch_id: str, *, worker: str) -> bool:
        """Give a claim back unfinished (reconcile failed), so another worker may take it now."""
        return self._end_claim(provider, vendor_batch_id, worker, RECONCILE_NONE)

    def _end_claim(self, provider: str, vendor_batch_id: str, worker: str | None, state: str) -> bool:
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
                self._require_batch(connection, provider, vendor_batch_id)
            return bool(changed)

        return self._write(work)

    def _require_batch(self, connection: Connection, provider: str, vendor_batch_id: str) -> None:
        found = connection.scalar(
            select(func.count()).where(batches_t.c.provider == provider, batches_t.c.vendor_batch_id == vendor_batch_id)
        )
        if not found:
            raise LedgerError(
                f"no {provider} batch {vendor_batch_id!r} in the ledger",
                provider=provider,
                vendor_batch_id=vendor_batch_id,
            )


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def _first_line(exc: BaseException | None) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _status_value(status: Any) -> str:
    value = status.value if hasattr(status, "value") else str(status)
    if value not in ITEM_STATUSES:
        raise LedgerError(f"unknown item status {value!r}; statuses are {', '.join(ITEM_STATUSES)}")
    return value


def _endpoint_value(endpoint: Any) -> str:
    return endpoint.value if isinstance(endpoint, Endpoint) else str(endpoint)


def _batch_values_names() -> tuple[str, ...]:
    return (
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


def _batch_values(info: BatchInfo) -> dict[str, Any]:
    return {
        "provider": info.provider,
        "vendor_batch_id": info.vendor_batch_id,
        "status": info.status.value,
        "vendor_status": info.vendor_status,
        "endpoint": None if info.endpoint is None else _endpoint_value(info.endpoint),
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


def _item_row(row: Any) -> ItemRow:
    m = row._mapping
    return ItemRow(
        job=m["job"],
        partition=m["partition"],
        custom_id=m["custom_id"],
        provider=m["provider"],
        model=m["model"],
        endpoint=Endpoint(m["endpoint"]),
        lane=Lane(m["lane"]),
        status=m["status"],
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


def _intent_row(row: Any) -> IntentRow:
    m = row._mapping
    return IntentRow(**{name: m[name] for name in IntentRow.__dataclass_fields__})


def _batch_row(row: Any) -> BatchRow:
    m = dict(row._mapping)
    m["status"] = BatchStatus(m["status"])
    m["errors"] = batch_errors_from_json(json.loads(m["errors"]) if m["errors"] else None)
    m["metadata"] = json.loads(m["metadata"]) if m["metadata"] else {}
    return BatchRow(**{name: m[name] for name in BatchRow.__dataclass_fields__})
