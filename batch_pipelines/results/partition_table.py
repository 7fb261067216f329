"""A partition's result table: one schema, one attempt writer, one merge.

The schema is defined here once: the base columns every row has (id, outcome, lane, the
attempt's key, usage, exact cost), then the workload's own columns, then its vector column
(a fixed-size list of float32). The OpenAI bulk parser (``results.parquet``) writes the same
base columns.

Each batch (or sync run) writes its own attempt file, so a crash mid-reconcile leaves at
worst one file to rewrite, and a retry never edits an earlier file. The writer turns rows
into Arrow record batches every ``BLOCK_ROWS`` rows, so an attempt is held as compact columns
(a 256-float vector as 1 KB of float32, not 256 Python floats), never as Python lists of the
whole attempt. The merge streams: one attempt file at a time, keeping for every item the row
of the attempt the ledger says is final (one row per input item, no duplicate whatever was
replayed), each attempt's rows in custom_id order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_pipelines.core.outcomes import ItemOutcome
from batch_pipelines.core.pricing import COST_QUANTUM, COST_SCALE, USAGE_FIELDS
from batch_pipelines.core.requests import Lane

COST_TYPE = pa.decimal128(38, COST_SCALE)
USAGE_COLUMNS = USAGE_FIELDS
COST_COLUMNS = ("cost_usd", "sync_equivalent_usd")
BASE_SCHEMA = pa.schema(
    [
        ("custom_id", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("model", pa.string()),
        ("lane", pa.string()),
        ("batch_key", pa.string()),
        *[(name, pa.int64()) for name in USAGE_COLUMNS],
        *[(name, COST_TYPE) for name in COST_COLUMNS],
    ]
)
BASE_COLUMNS = tuple(BASE_SCHEMA.names)
BLOCK_ROWS = 4096
_ZERO_COST = (Decimal(0), Decimal(0))


class AttemptTableWriter:
    """Collects one attempt's outcomes (and the workload's parsed columns) into a Parquet file."""

    def __init__(self, path: Path, vector_column: str | None = None, *, block_rows: int = BLOCK_ROWS) -> None:
        self.path = Path(path)
        self.vector_column = vector_column
        self.block_rows = block_rows
        self._base: list[tuple[Any, ...]] = []
        self._extra: list[Mapping[str, Any]] = []
        self._blocks: list[pa.Table] = []

    def add(
        self,
        outcome: ItemOutcome,
        columns: Mapping[str, Any],
        *,
        batch_key: str,
        lane: Lane,
        cost: tuple[Decimal, Decimal] | None,
    ) -> None:
        usage = outcome.usage
        cost_usd, sync_usd = cost or _ZERO_COST
        self._base.append(
            (
                outcome.custom_id,
                outcome.kind.value,
                outcome.reason,
                outcome.model,
                lane.value,
                batch_key,
                usage.input_tokens,
                usage.cached_input_tokens,
                usage.cache_write_tokens,
                usage.output_tokens,
                usage.reasoning_tokens,
                cost_usd.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN),
                sync_usd.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN),
            )
        )
        self._extra.append(columns)
        if len(self._base) >= self.block_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._base:
            return
        arrays = [pa.array(list(values), type=f.type) for f, values in zip(BASE_SCHEMA, zip(*self._base))]
        table = pa.Table.from_arrays(arrays, schema=BASE_SCHEMA)
        names: dict[str, None] = {}  # the workload's columns in the order first seen
        for row in self._extra:
            names.update(dict.fromkeys(row))
        for name in names:
            values = [row.get(name) for row in self._extra]
            table = table.append_column(name, _vector_array(values) if name == self.vector_column else pa.array(values))
        self._blocks.append(table)
        self._base = []
        self._extra = []

    def table(self) -> pa.Table:
        """The attempt so far; a column first seen in a later block is null in the earlier ones."""
        self._flush()
        if not self._blocks:
            return BASE_SCHEMA.empty_table()
        return pa.concat_tables(self._blocks, promote_options="permissive")

    def __enter__(self) -> AttemptTableWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()

    def close(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".parquet.tmp")
        pq.write_table(self.table(), tmp)
        os.replace(tmp, self.path)  # atomic: a crash never leaves half a file under the real name


def _vector_array(values: list[Any]) -> pa.Array:
    """Vectors as a Parquet fixed-size list of float32 (nulls where an item has none)."""
    size = next((len(v) for v in values if v is not None), 0)
    if not size:
        return pa.array(values)
    flat = pa.array([x for v in values for x in (v if v is not None else [0.0] * size)], type=pa.float32())
    mask = pa.array([v is None for v in values])
    return pa.FixedSizeListArray.from_arrays(flat, size, mask=mask)


def write_partition_table(
    attempts_dir: Path, dest: Path, ledger: Any, job: str, partition: str, vector_column: str | None = None
) -> Path:
    """Merge the attempt files one at a time, keeping each item's final attempt as the ledger records it."""
    files = sorted(Path(attempts_dir).glob("*.parquet"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".parquet.tmp")
    if not files:
        pq.write_table(BASE_SCHEMA.empty_table(), tmp)
        os.replace(tmp, dest)
        return dest
    # Each item's final batch_key as two Arrow columns, read set-wise; each attempt's rows look
    # theirs up by index (no Python dict or string per item).
    final = pa.Table.from_batches(
        ledger.read_item_columns(job, partition, ["custom_id", "batch_key"]),
        schema=pa.schema([("custom_id", pa.string()), ("batch_key", pa.string())]),
    )
    final_ids, final_keys = final.column("custom_id").combine_chunks(), final.column("batch_key").combine_chunks()
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    with pq.ParquetWriter(tmp, schema) as out:
        for path in files:
            table = pq.read_table(path)
            positions = pc.index_in(table.column("custom_id").cast(pa.string()), value_set=final_ids)
            wanted = pc.take(final_keys, positions)  # null where the ledger has no such item
            kept = table.filter(pc.equal(table.column("batch_key"), wanted)).sort_by("custom_id")
            out.write_table(_conform(kept, schema))
    os.replace(tmp, dest)
    return dest


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order: missing ones null, others cast."""
    arrays = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)
