"""Materialization metadata from the services' reports: counts, tokens, dollars, savings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.dagster_layer import metadata_keys as keys
from batch_pipelines.services.reconcile import ReconcileReport

TOP_REASONS = 5  # in the summary; the table metadata has them all


def _usd(value: Decimal) -> float:
    # Dagster plots floats; the exact Decimal travels beside it as a string.
    return float(value)


def results_metadata(
    report: ReconcileReport, *, provider_of: Callable[[str], str], failure_reasons: Sequence[FailureReason] = ()
) -> dict[str, Any]:
    """Everything the UI shows for a finished partition, and what the checks read.

    ``failure_reasons`` (from :func:`failure_reasons`) adds the table of failures by reason and
    the top reasons in the summary.
    """
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
    if failure_reasons:
        metadata[keys.FAILURES_BY_REASON] = dg.MetadataValue.table(
            records=[
                dg.TableRecord({"status": r.status, "reason": r.reason, "items": r.items}) for r in failure_reasons
            ],
            schema=dg.TableSchema(
                columns=[
                    dg.TableColumn("status", "string"),
                    dg.TableColumn("reason", "string"),
                    dg.TableColumn("items", "int"),
                ]
            ),
        )
    summary = _summary(total, counts, cost, sync, savings, savings_pct, failure_reasons[:TOP_REASONS])
    metadata[keys.SUMMARY] = dg.MetadataValue.md(summary)
    return metadata


@dataclass(frozen=True)
class FailureReason:
    """How many items of a partition ended with one status for one reason."""

    status: str
    reason: str
    items: int


def failure_reasons(results_path: Path | str) -> list[FailureReason]:
    """Items that did not succeed, grouped by status and reason, most frequent first.

    Reads two columns of the Parquet table, so a large partition costs little.
    """
    table = pq.read_table(results_path, columns=["status", "reason"])
    failed = table.filter(pc.not_equal(table["status"], OutcomeKind.SUCCEEDED.value))
    if failed.num_rows == 0:
        return []
    failed = failed.set_column(1, "reason", pc.fill_null(failed["reason"], "(no reason given)"))
    grouped = failed.group_by(["status", "reason"]).aggregate([("status", "count")]).to_pylist()
    reasons = [FailureReason(g["status"], _short(g["reason"]), int(g["status_count"])) for g in grouped]
    return sorted(reasons, key=lambda r: (-r.items, r.status, r.reason))


def _short(reason: str, limit: int = 160) -> str:
    one_line = " ".join(reason.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


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


def _summary(
    total: int,
    counts: dict[str, int],
    cost: Decimal,
    sync: Decimal,
    savings: Decimal,
    pct: Decimal,
    top_reasons: Sequence[FailureReason],
) -> str:
    # Headline first: what a person wants in one glance; then the breakdown, then why items failed.
    rate = counts["succeeded"] / total * 100 if total else 0.0
    lines = [
        f"**{total} items · {rate:.2f}% succeeded · cost ${cost:.4f} · saved ${savings:.4f} ({pct:.1f}%)**",
        "",
        "| outcome | items |",
        "|---|---|",
        *(f"| {kind} | {n} |" for kind, n in counts.items() if n),
    ]
    if top_reasons:
        lines += ["", "Top failure reasons:", "", "| status | reason | items |", "|---|---|---|"]
        lines += [f"| {r.status} | {r.reason.replace('|', '/')} | {r.items} |" for r in top_reasons]
    lines += ["", f"Batch cost ${cost:.4f} vs ${sync:.4f} on the sync lane."]
    return "\n".join(lines)
