"""A partition's items as Arrow record batches, read set-wise through the driver's own cursor.

The results path reads whole partitions: every custom_id a batch holds, each item's final
batch_key. Through ``iter_items`` each row passes SQLAlchemy's result processing and becomes an
``ItemRow``; at 100,000 items that was half the results phase. Here each block is one
keyset-paged query on the raw DBAPI cursor (no transaction held between blocks, as
``iter_items``), and its rows become Arrow arrays column by column: strings and integers
directly, money as exact ``decimal128(24, 12)`` (SQLite's integer pico-dollars are laid into
the decimal's buffer, never through ``Decimal``), times as ``timestamp[us, UTC]``. Only the
columns asked for are read, and memory holds one block at a time.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa

from batch_pipelines.core.errors import LedgerError
from batch_pipelines.ledger.database import Database
from batch_pipelines.ledger.item_reads import StatusLike, status_values
from batch_pipelines.ledger.schema import MONEY_SCALE, Money, UTCDateTime, money_from_sqlite
from batch_pipelines.ledger.schema import items as items_t

# Enough rows per block that the per-query cost vanishes; few enough to stay ~10 MB in Python.
DEFAULT_BLOCK_ROWS = 65_536
MONEY_TYPE = pa.decimal128(24, MONEY_SCALE)
TIME_TYPE = pa.timestamp("us", tz="UTC")


def _arrow_type(column: Any) -> pa.DataType:
    if isinstance(column.type, Money):
        return MONEY_TYPE
    if isinstance(column.type, UTCDateTime):
        return TIME_TYPE
    if column.type.python_type is int:
        return pa.int64()
    return pa.string()


# Every column of bp_items, with the Arrow type it is read as.
ITEM_COLUMN_TYPES: dict[str, pa.DataType] = {column.name: _arrow_type(column) for column in items_t.columns}


class ItemColumnReader:
    def __init__(self, db: Database) -> None:
        self._db = db
        quote = db.engine.dialect.identifier_preparer.quote
        self._quote = quote
        self._placeholder = "?" if db.dialect == "sqlite" else "%s"
        # As in iter_items: on SQLite a unary + keeps the planner walking the primary key in order.
        self._hint = "+" if db.dialect == "sqlite" else ""

    def read(
        self,
        job: str,
        partition: str,
        columns: Sequence[str],
        *,
        statuses: Iterable[StatusLike] | None = None,
        batch_key: str | None = None,
        batch_key_prefix: str | None = None,
        block_rows: int = DEFAULT_BLOCK_ROWS,
    ) -> Iterator[pa.RecordBatch]:
        names = _checked_columns(columns)
        if block_rows < 1:
            raise LedgerError(f"block_rows must be positive, got {block_rows}")
        schema = pa.schema([pa.field(name, ITEM_COLUMN_TYPES[name]) for name in names])
        # custom_id is the page key: read it even when not asked for, and drop it after.
        selected = names if "custom_id" in names else ("custom_id", *names)
        key_index = selected.index("custom_id")
        sql, params = self._query(selected, job, partition, statuses, batch_key, batch_key_prefix)
        page_sql = f"{sql} ORDER BY custom_id LIMIT {int(block_rows)}"
        after_sql = f"{sql} AND custom_id > {self._placeholder} ORDER BY custom_id LIMIT {int(block_rows)}"
        after: str | None = None
        while True:
            with _no_cycle_collection():
                rows = self._fetch(
                    page_sql if after is None else after_sql, params if after is None else [*params, after]
                )
                block = self._block(rows, selected, schema) if rows else None
                last = rows[-1][key_index] if len(rows) == block_rows else None
                del rows
            if block is not None:
                yield block
            if last is None:
                return
            after = last

    def _block(self, rows: list[tuple[Any, ...]], selected: Sequence[str], schema: pa.Schema) -> pa.RecordBatch:
        arrays = []
        for field in schema:
            position = selected.index(field.name)
            arrays.append(self._array([row[position] for row in rows], field.type))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _query(
        self,
        selected: Sequence[str],
        job: str,
        partition: str,
        statuses: Iterable[StatusLike] | None,
        batch_key: str | None,
        batch_key_prefix: str | None,
    ) -> tuple[str, list[Any]]:
        mark, hint, quote = self._placeholder, self._hint, self._quote
        conditions = [f"{quote('job')} = {mark}", f"{quote('partition')} = {mark}"]
        params: list[Any] = [job, partition]
        if statuses is not None:
            wanted = status_values(statuses)
            if not wanted:
                conditions.append("1 = 0")
            else:
                conditions.append(f"{hint}status IN ({', '.join([mark] * len(wanted))})")
                params.extend(wanted)
        if batch_key is not None:
            conditions.append(f"{hint}batch_key = {mark}")
            params.append(batch_key)
        if batch_key_prefix is not None:
            conditions.append(f"{hint}batch_key LIKE {mark} ESCAPE '!'")
            params.append(_like_prefix(batch_key_prefix))
        columns = ", ".join(quote(name) for name in selected)
        return f"SELECT {columns} FROM {items_t.name} WHERE {' AND '.join(conditions)}", params

    def _fetch(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        dbapi_error = self._db.engine.dialect.loaded_dbapi.Error
        with self._db.reading() as connection:
            cursor = connection.connection.cursor()
            try:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
            except dbapi_error as exc:
                raise self._db.refused(exc) from exc
            finally:
                cursor.close()

    def _array(self, values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
        if arrow_type == MONEY_TYPE:
            return _money_array(values) if self._db.dialect == "sqlite" else pa.array(values, type=MONEY_TYPE)
        if arrow_type == TIME_TYPE and self._db.dialect == "sqlite":
            # SQLite keeps naive UTC text ("2026-11-20 01:00:00.000000"); Arrow parses it.
            return pa.array(values, type=pa.string()).cast(pa.timestamp("us")).cast(TIME_TYPE)
        return pa.array(values, type=arrow_type)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Hold off Python's cycle collector while a block's rows exist.

    A block is tens of thousands of fresh tuples that survive long enough to be promoted, so the
    collector runs full passes over every object in the process (Dagster's included) while they
    are built: measured here, 2-4x the time of the read itself. They hold only strings, numbers
    and times, never a cycle, and the collector runs as usual once they are gone.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _checked_columns(columns: Sequence[str]) -> tuple[str, ...]:
    if isinstance(columns, str):
        raise LedgerError(f"columns must be a sequence of column names, got the string {columns!r}")
    names = tuple(dict.fromkeys(columns))
    unknown = [name for name in names if name not in ITEM_COLUMN_TYPES]
    if unknown or not names:
        raise LedgerError(
            f"cannot read item columns {unknown or '(none)'}; the columns are {', '.join(ITEM_COLUMN_TYPES)}",
            columns=list(columns),
        )
    return names


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"{escaped}%"


def _money_array(values: Sequence[int]) -> pa.Array:
    """SQLite's integer pico-dollars as decimal128(24, 12): the integers are the decimal's unscaled values."""
    if sys.byteorder != "little":  # the layout below is little-endian; elsewhere take the exact slow path
        return pa.array([money_from_sqlite(value) for value in values], type=MONEY_TYPE)
    unscaled = np.fromiter(values, dtype=np.int64, count=len(values))  # the money columns are NOT NULL
    # decimal128 is a little-endian 128-bit integer per value: the low word, then its sign extension.
    words = np.empty(2 * len(unscaled), dtype=np.int64)
    words[0::2] = unscaled
    words[1::2] = np.where(unscaled < 0, -1, 0)
    return pa.Array.from_buffers(MONEY_TYPE, len(unscaled), [None, pa.py_buffer(words)])
