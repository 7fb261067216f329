"""Materialization metadata from the services' reports: counts, tokens, dollars, savings."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.dagster_layer import metadata_keys as keys
from batch_pipelines.services.reconcile import ReconcileReport


def _usd(value: Decimal) -> float:
    # Dagster plots floats; the exact Decimal travels beside it as a string.
    return float(value)


def results_metadata(report: ReconcileReport, *, provider_of: Callable[[str], str]) -> dict[str, Any]:
    """Everything the UI shows for a finished partition, and what the checks read."""
    totals = report.totals
    counts = {kind.value: totals.count(kind) for kind in OutcomeKind}
    total = int(totals.item_count)
    succeeded = counts[OutcomeKind.SUCCEEDED.value]
    cost, sync = totals.cost_usd, totals.sync_equivalent_usd
    savings = sync - cost
    savings_pct = (savings / sync * 100) if sync else Decimal(0)
    metadata: dict[str, Any] = {
        keys.ITEMS_TOTAL: total,
        **{keys.outcome_count(kind): n for kind, n in counts.items()},
        keys.SUCCESS_RATE: succeeded / total if total else 0.0,
        keys.COST_USD: _usd(cost),
        keys.COST_USD_EXACT: str(cost),
        keys.SYNC_EQUIVALENT_USD: _usd(sync),
        keys.SAVINGS_USD: _usd(savings),
        keys.SAVINGS_PCT: float(round(savings_pct, 4)),
        keys.RETRIED_ITEMS: report.retried_on_sync + report.resubmitted,
        keys.PROMOTED_ITEMS: report.promoted,
        keys.PROMOTION_EXTRA_COST_USD: _usd(report.promotion_extra_cost_usd),
        keys.PAID_TWICE_USD: _usd(report.paid_twice_usd),
        keys.BATCH_IDS: dg.MetadataValue.json(list(report.batch_ids)),
    }
    for model, model_totals in sorted(totals.by_model.items()):
        provider, usage = provider_of(model), model_totals.usage
        # dagster-openai's `.calls`: one per billed attempt (a retried item is two calls).
        metadata[keys.token_key(provider, model, "calls")] = model_totals.attempts
        metadata[keys.token_key(provider, model, "prompt_tokens")] = usage.input_tokens
        metadata[keys.token_key(provider, model, "cached_tokens")] = usage.cached_input_tokens
        metadata[keys.token_key(provider, model, "completion_tokens")] = usage.output_tokens
        metadata[keys.token_key(provider, model, "total_tokens")] = usage.total_tokens
    if report.results_path is not None:
        metadata[keys.RESULTS_PATH] = dg.MetadataValue.path(str(report.results_path))
    metadata[keys.SUMMARY] = dg.MetadataValue.md(_summary(total, counts, cost, sync, savings, savings_pct))
    return metadata


def table_metadata(results_path: Path | str) -> dict[str, Any]:
    """Dagster's standard ``dagster/row_count`` and ``dagster/column_schema`` of the results table.

    Read from the Parquet footer only: no row is loaded, however large the partition.
    """
    parquet = pq.ParquetFile(results_path)
    columns = [dg.TableColumn(name=f.name, type=str(f.type)) for f in parquet.schema_arrow]
    return {
        keys.ROW_COUNT: parquet.metadata.num_rows,
        keys.COLUMN_SCHEMA: dg.MetadataValue.table_schema(dg.TableSchema(columns=columns)),
    }


def _summary(total: int, counts: dict[str, int], cost: Decimal, sync: Decimal, savings: Decimal, pct: Decimal) -> str:
    rows = "\n".join(f"| {kind} | {n} |" for kind, n in counts.items() if n)
    return (
        f"**{total} items**: {counts['succeeded']} succeeded.\n\n"
        f"| outcome | items |\n|---|---|\n{rows}\n\n"
        f"Batch cost **${cost:.4f}** vs **${sync:.4f}** on the sync lane: saved **${savings:.4f}** ({pct:.1f}%)."
    )
