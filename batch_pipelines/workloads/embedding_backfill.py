"""Embedding backfill: corpus chunks -> vectors, one static partition per corpus shard.

Large and one-shot; vectors land in Parquet as fixed-size lists of float32.
"""

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import dagster as dg
import pandas as pd

from batch_pipelines.core.requests import Endpoint
from batch_pipelines.dagster_layer.factory import batch_workload
from batch_pipelines.dagster_layer.workload import BatchWorkload, InvalidOutput
from batch_pipelines.workloads import synthetic
from batch_pipelines.workloads.common import SyntheticInputConfig

shards = dg.StaticPartitionsDefinition([f"shard-{i:03d}" for i in range(4)])
DIMENSIONS = 256


@dg.asset(partitions_def=shards, group_name="embedding_backfill", kinds={"pandas"})
def corpus_chunks(context: dg.AssetExecutionContext, config: SyntheticInputConfig) -> pd.DataFrame:
    """The chunks of one corpus shard (synthetic, seeded)."""
    return synthetic.corpus_chunks(context.partition_key, rows=config.rows, seed=config.seed)


def _request(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"input": row["text"], "dimensions": DIMENSIONS, "encoding_format": "float"}


def _parse(response: dict[str, Any]) -> dict[str, Any]:
    vector = response["data"][0]["embedding"]
    if len(vector) != DIMENSIONS:
        raise InvalidOutput(f"vector has {len(vector)} dimensions, expected {DIMENSIONS}")
    return {"embedding": vector}


workload = BatchWorkload(
    name="embedding_backfill",
    upstream=corpus_chunks,
    partitions_def=shards,
    model="text-embedding-3-small",
    endpoint=Endpoint.EMBEDDINGS,
    build_request=_request,
    parse_response=_parse,
    id_column="chunk_id",
    required_columns=("text",),
    budget_usd=Decimal("0.50"),
    min_success_rate=0.95,
    vector_column="embedding",
    group_name="embedding_backfill",
)
defs = batch_workload(workload)
