"""The outcomes table as Parquet: one row per submitted custom_id, written in record batches.

``OutcomeParquetWriter`` takes ``ItemOutcome`` values (any vendor, any lane) and writes them in
record batches as they come, so memory holds one batch of rows, not the table. The bulk parser
of OpenAI output files (``results.openai_bulk``) writes the same schema (``OUTCOMES_SCHEMA``)
without a Python object per line.

Costs come from the price book's column arithmetic (``PriceBook.cost_columns``): whole
femto-dollars per row, stored as the unscaled value of a ``decimal128(38, 15)``. The base
columns and their types are those of the one result schema (``results.partition_table``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.pricing import COST_QUANTUM, COST_SCALE
from batch_pipelines.results.partition_table import COST_TYPE, USAGE_COLUMNS

OUTCOMES_SCHEMA = pa.schema(
    [
        ("custom_id", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("model", pa.string()),
        ("status_code", pa.int32()),
        ("error_code", pa.string()),
        *[(name, pa.int64()) for name in USAGE_COLUMNS],
        ("cost_usd", COST_TYPE),
        ("sync_equivalent_usd", COST_TYPE),
        ("response_text", pa.string()),
    ]
)
BATCH_ROWS = 65_536


def response_text(response: Any) -> str | None:
    """The answer's text: chat ``choices[0].message.content`` or Anthropic's text blocks."""
    if not isinstance(response, dict):
        return None
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else None
    content = response.get("content")
    if isinstance(content, list):
        return "".join(
            block.get("text", "") for block in content if isinstance(block, dict) and block.get("type") == "text"
        )
    return None


def cost_array(femto: np.ndarray) -> pa.Array:
    """Whole femto-dollars per row as a decimal128(38, 15) column (its unscaled value)."""
    if femto.dtype != np.int64:  # the price book's exact per-row path: Python ints
        return pa.array([Decimal(int(v)).scaleb(-COST_SCALE) for v in femto], type=COST_TYPE)
    # A decimal128's buffer is its unscaled value as a little-endian 128-bit integer.
    wide = np.empty((len(femto), 2), dtype=np.int64)
    wide[:, 0] = femto
    wide[:, 1] = femto >> 63
    return pa.Array.from_buffers(COST_TYPE, len(femto), [None, pa.py_buffer(wide)])


def zero_costs(n: int) -> pa.Array:
    return pa.Array.from_buffers(COST_TYPE, n, [None, pa.py_buffer(np.zeros(2 * n, dtype=np.int64))])


class OutcomeParquetWriter:
    """Streams ``ItemOutcome`` values into a Parquet file, ``BATCH_ROWS`` rows at a time.

    Writes to ``<path>.tmp`` and renames on close, so a crash never leaves half a table under
    the real name. Costs come from ``costs[custom_id] = (cost_usd, sync_equivalent_usd)``.
    """

    def __init__(self, path: str | os.PathLike[str], *, batch_rows: int = BATCH_ROWS) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._writer = pq.ParquetWriter(self._tmp, OUTCOMES_SCHEMA)
        self._batch_rows = batch_rows
        self._rows: list[tuple[Any, ...]] = []
        self.rows = 0

    def write(self, outcome: ItemOutcome, cost: tuple[Decimal, Decimal] | None = None) -> None:
        usage = outcome.usage
        self._rows.append(
            (
                outcome.custom_id,
                outcome.kind.value,
                outcome.reason,
                outcome.model,
                outcome.status_code,
                outcome.error_code,
                usage.input_tokens,
                usage.cached_input_tokens,
                usage.cache_write_tokens,
                usage.output_tokens,
                usage.reasoning_tokens,
                cost[0] if cost else Decimal(0),
                cost[1] if cost else Decimal(0),
                response_text(outcome.response) if outcome.kind is OutcomeKind.SUCCEEDED else None,
            )
        )
        if len(self._rows) >= self._batch_rows:
            self._flush()

    def write_all(
        self, outcomes: Iterable[ItemOutcome], costs: Mapping[str, tuple[Decimal, Decimal]] | None = None
    ) -> None:
        for outcome in outcomes:
            self.write(outcome, costs.get(outcome.custom_id) if costs else None)

    def write_table(self, table: pa.Table) -> None:
        """Rows already in ``OUTCOMES_SCHEMA`` (the vectorised path)."""
        self._flush()
        self._writer.write_table(table)
        self.rows += table.num_rows

    def _flush(self) -> None:
        if not self._rows:
            return
        columns = list(zip(*self._rows))
        arrays = []
        values: Sequence[Any]
        for kind, values in zip((f.type for f in OUTCOMES_SCHEMA), columns):
            if kind == COST_TYPE:
                values = [v.quantize(COST_QUANTUM) for v in values]
            arrays.append(pa.array(values, type=kind))
        self._writer.write_batch(pa.record_batch(arrays, schema=OUTCOMES_SCHEMA))
        self.rows += len(self._rows)
        self._rows = []

    def close(self) -> Path:
        self._flush()
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> OutcomeParquetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_outcomes_parquet(
    outcomes: Iterable[ItemOutcome],
    path: str | os.PathLike[str],
    costs: Mapping[str, tuple[Decimal, Decimal]] | None = None,
) -> Path:
    with OutcomeParquetWriter(path) as writer:
        writer.write_all(outcomes, costs)
    return writer.path


def read_outcomes_table(path: str | os.PathLike[str]) -> pa.Table:
    return pq.read_table(path, schema=OUTCOMES_SCHEMA)
