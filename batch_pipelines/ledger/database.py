"""The ledger's database: one engine, short read connections, and write transactions that retry.

Every part of the ledger (items, intents, batches, reports) works through one ``Database``:
``reading()`` for a short read, ``write(work)`` for one write transaction. Database errors
leave here as ``LedgerError`` naming the ledger with its password masked. On PostgreSQL a
write chosen as a deadlock victim is run again: every write the ledger makes is idempotent.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Column, Connection, Table, event, literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError
from sqlalchemy.schema import CreateTable

from batch_pipelines.core.errors import LedgerError
from batch_pipelines.ledger.engine import WRITE_OPTION, create_ledger_engine, mask_url
from batch_pipelines.ledger.schema import item_stage, key_stage, outcome_stage

T = TypeVar("T")

# PostgreSQL may pick one of two workers that lock the same rows in different orders as a
# deadlock victim; the chunk is idempotent, so it is simply run again.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
_MAX_TRANSIENT_RETRIES = 8
# On PostgreSQL, refresh planner statistics after a call that changed at least this many rows.
_ANALYZE_AFTER_ROWS = 10_000


def utcnow() -> datetime:
    return datetime.now(UTC)


def chunks(values: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(values)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def check_partition(job: str, partition: str) -> None:
    if not job or not partition:
        raise LedgerError(f"job and partition must be non-empty (got job={job!r}, partition={partition!r})")


class Database:
    """The engine and the transaction plumbing shared by every part of the ledger."""

    def __init__(self, url: URL, *, chunk_size: int, clock: Callable[[], datetime]) -> None:
        self.url = url
        self.url_for_display: str = mask_url(url)
        self.chunk_size = chunk_size
        self.clock = clock
        self.engine: Engine = create_ledger_engine(url)
        self.dialect: str = self.engine.dialect.name
        # INSERT ... ON CONFLICT comes from the dialect's own module.
        self.insert = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
        event.listen(self.engine, "connect", self._create_stage_tables)

    def close(self) -> None:
        self.engine.dispose()

    def _create_stage_tables(self, dbapi_connection: Any, _record: Any) -> None:
        # Created once per pooled connection, outside any ledger transaction, so that a rolled
        # back chunk can never take the scratch tables with it.
        cursor = dbapi_connection.cursor()
        stages = (outcome_stage, key_stage) if self.dialect == "sqlite" else (item_stage, outcome_stage, key_stage)
        for table in stages:
            cursor.execute(str(CreateTable(table, if_not_exists=True).compile(dialect=self.engine.dialect)))
        cursor.close()
        if self.dialect != "sqlite":
            dbapi_connection.commit()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.guard(), self.engine.connect() as connection:
            yield connection

    def write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one write transaction, again if the database chose it as a deadlock victim."""
        for attempt in itertools.count():
            try:
                with self.guard(), self.engine.connect() as connection:
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
    def guard(self) -> Iterator[None]:
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

    def refused(self, exc: BaseException) -> LedgerError:
        """A driver's own error (raised through a raw cursor, which SQLAlchemy does not wrap) as a LedgerError."""
        return LedgerError(
            f"ledger {self.url_for_display} refused a statement: {_first_line(exc)}", url=self.url_for_display
        )

    def unindexed(self, column: Column[Any]) -> Any:
        """``column`` as a condition SQLite's planner will not use an index for.

        Without stats SQLite believes a (job, partition, status) index range is small and scans
        it, testing each row against the staged chunk: a whole-partition scan per chunk. The
        unary ``+`` leaves it one plan: seek each staged custom_id by primary key.
        """
        if self.dialect != "sqlite":
            return column
        return literal_column(f"+{column.table.name}.{column.name}", type_=column.type)

    def analyze(self, connection: Connection, table: Table) -> None:
        """Refresh PostgreSQL's statistics of ``table`` (a no-op on SQLite).

        Without them the planner believes a freshly loaded table holds a handful of rows and
        drives each chunk's join from a whole-partition index scan instead of from the chunk.
        Stage tables are analysed per chunk (a few ms); ledger tables after bulk changes.
        """
        if self.dialect == "postgresql":
            connection.exec_driver_sql(f"ANALYZE {self.engine.dialect.identifier_preparer.format_table(table)}")

    def analyze_after_bulk(self, changed: int, *tables: Table) -> None:
        if self.dialect == "postgresql" and changed >= _ANALYZE_AFTER_ROWS:

            def work(connection: Connection) -> None:
                for table in tables:
                    self.analyze(connection, table)

            self.write(work)


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def _first_line(exc: BaseException | None) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
