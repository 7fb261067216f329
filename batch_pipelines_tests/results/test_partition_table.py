"""The one result schema and the attempt writer that builds it block by block."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.usage import Usage
from batch_pipelines.results import parquet
from batch_pipelines.results.partition_table import BASE_SCHEMA, COST_TYPE, USAGE_COLUMNS, AttemptTableWriter


def _outcome(i: int, kind: OutcomeKind = OutcomeKind.SUCCEEDED) -> ItemOutcome:
    usage = Usage(
        input_tokens=100 + i, cached_input_tokens=i, cache_write_tokens=1, output_tokens=5, reasoning_tokens=2
    )
    return ItemOutcome(f"item-{i:03d}", kind, None if kind is OutcomeKind.SUCCEEDED else "boom", usage=usage, model="m")


def test_the_attempt_table_has_the_one_schema_written_in_blocks(tmp_path):
    """Rows go out in blocks; every usage column and exact costs are kept; late columns are null before."""
    path = tmp_path / "attempt.parquet"
    with AttemptTableWriter(path, vector_column="embedding", block_rows=3) as writer:
        for i in range(8):
            failed = i < 4  # the first blocks have no workload columns at all
            columns = {} if failed else {"label": f"l{i}", "embedding": [float(i), 0.5, -1.0]}
            writer.add(
                _outcome(i, OutcomeKind.FAILED if failed else OutcomeKind.SUCCEEDED),
                columns,
                batch_key="batch-1",
                lane=Lane.BATCH,
                cost=None if failed else (Decimal("0.000001234567890123456"), Decimal("0.0000025")),
            )
    table = pq.read_table(path)
    assert table.schema.names[: len(BASE_SCHEMA)] == BASE_SCHEMA.names
    assert table.num_rows == 8
    for name in USAGE_COLUMNS:
        assert table.schema.field(name).type == pa.int64()
    assert table.column("cache_write_tokens").to_pylist() == [1] * 8
    assert table.column("reasoning_tokens").to_pylist() == [2] * 8
    assert table.schema.field("cost_usd").type == COST_TYPE
    assert table.column("cost_usd").to_pylist()[5] == Decimal("0.000001234567890")  # rounded half-even to 1e-15
    assert table.column("label").to_pylist() == [None] * 4 + ["l4", "l5", "l6", "l7"]
    vectors = table.column("embedding")
    assert vectors.type == pa.list_(pa.float32(), 3)
    assert vectors.to_pylist()[:4] == [None] * 4 and vectors.to_pylist()[7] == [7.0, 0.5, -1.0]


def test_the_bulk_parser_shares_the_base_types():
    """The OpenAI bulk parser's table uses the same usage and cost column types as the result schema."""
    for name in (*USAGE_COLUMNS, "cost_usd", "sync_equivalent_usd", "custom_id", "status", "reason", "model"):
        assert parquet.OUTCOMES_SCHEMA.field(name).type == BASE_SCHEMA.field(name).type
