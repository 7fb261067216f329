"""A partition's result table: one Parquet file per attempt, merged into one row per item.

Each batch (or sync run) writes its own attempt file, so a crash mid-reconcile leaves at
worst one file to rewrite, and a retry never edits an earlier file. The partition table keeps,
for every item, the row of the attempt the ledger says is final: one row per input item, and
no duplicated row whatever was replayed.
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
from batch_pipelines.core.requests import Lane

COST_TYPE = pa.decimal128(38, 15)
_COST_QUANTUM = Decimal("1e-15")
BASE_COLUMNS = (
    "custom_id",
    "status",
    "reason",
    "model",
    "lane",
    "batch_key",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cost_usd",
    "sync_equivalent_usd",
)


class AttemptTableWriter:
    """Collects one attempt's outcomes (and the workload's parsed columns) into a Parquet file."""

    def __init__(self, path: Path, vector_column: str | None = None) -> None:
        self.path = Path(path)
        self.vector_column = vector_column
        self._base: dict[str, list[Any]] = {c: [] for c in BASE_COLUMNS}
        self._extra: dict[str, list[Any]] = {}
        self._rows = 0

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
        cost_usd, sync_usd = cost if cost else (Decimal(0), Decimal(0))
        values = (
            outcome.custom_id,
            outcome.kind.value,
            outcome.reason,
            outcome.model,
            lane.value,
            batch_key,
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.output_tokens,
            cost_usd.quantize(_COST_QUANTUM, rounding=ROUND_HALF_EVEN),
            sync_usd.quantize(_COST_QUANTUM, rounding=ROUND_HALF_EVEN),
        )
        for name, value in zip(BASE_COLUMNS, values):
            self._base[name].append(value)
        for name in columns.keys() - self._extra.keys():
            self._extra[name] = [None] * self._rows  # a column first seen late is null before
        for name, column in self._extra.items():
            column.append(columns.get(name))
        self._rows += 1

    def table(self) -> pa.Table:
        arrays: dict[str, pa.Array] = {}
        for name in BASE_COLUMNS:
            if name in ("cost_usd", "sync_equivalent_usd"):
                arrays[name] = pa.array(self._base[name], type=COST_TYPE)
            elif name.endswith("_tokens"):
                arrays[name] = pa.array(self._base[name], type=pa.int64())
            else:
                arrays[name] = pa.array(self._base[name], type=pa.string())
        for name, values in self._extra.items():
            arrays[name] = _vector_array(values) if name == self.vector_column else pa.array(values)
        return pa.table(arrays)

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
    flat = pa.array([x for v in values for x in (v if v is not None else [0.0] * size)], type=pa.float32())
    mask = pa.array([v is None for v in values])
    return pa.FixedSizeListArray.from_arrays(flat, size, mask=mask) if size else pa.array(values)


def write_partition_table(
    attempts_dir: Path, dest: Path, ledger: Any, job: str, partition: str, vector_column: str | None = None
) -> Path:
    """Merge the attempt files, keeping each item's final attempt as the ledger records it."""
    files = sorted(Path(attempts_dir).glob("*.parquet"))
    final_key = {item.custom_id: item.batch_key for item in ledger.iter_items(job, partition)}
    tables = [pq.read_table(f) for f in files]
    if tables:
        merged = pa.concat_tables(tables, promote_options="permissive")
        wanted = pa.array([final_key.get(cid) for cid in merged.column("custom_id").to_pylist()], type=pa.string())
        merged = merged.filter(pc.equal(merged.column("batch_key"), wanted))
        merged = merged.sort_by("custom_id")
    else:
        merged = pa.table({c: pa.array([], type=pa.string()) for c in BASE_COLUMNS})
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".parquet.tmp")
    pq.write_table(merged, tmp)
    os.replace(tmp, dest)
    return dest
