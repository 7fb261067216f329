"""The invoice as people read it: a markdown table (Dagster metadata) and a PNG of spend by workload."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from batch_pipelines.reports.charts import paired_bars_png
from batch_pipelines.services.invoice import Invoice

_CENT = Decimal("0.01")
_MICRO = Decimal("0.000001")
# A day of a small workload costs cents: below this, amounts keep six decimals so they still differ.
_FINE_BELOW = Decimal(100)


def money(value: Decimal) -> str:
    """Display rounding only: cents from $100, millionths of a dollar below."""
    quantum = _MICRO if abs(value) < _FINE_BELOW else _CENT
    return f"${value.quantize(quantum, rounding=ROUND_HALF_UP):,}"


def invoice_png(invoice: Invoice) -> bytes:
    return paired_bars_png(
        invoice.by_workload(), ("paid", "all on the sync lane"), f"Spend on {invoice.day.isoformat()} by workload"
    )


def invoice_markdown(invoice: Invoice) -> str:
    """The invoice as a markdown table (the Dagster asset's metadata), totals last."""
    rows = [
        "| workload | lane | model | attempts | tokens in / out | cost | all on sync | saving |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for line in invoice.lines:
        rows.append(
            f"| {line.workload} | {line.lane.value} | {line.model} | {line.attempts:,} | "
            f"{line.usage.input_tokens:,} / {line.usage.output_tokens:,} | {money(line.cost_usd)} | "
            f"{money(line.sync_equivalent_usd)} | {money(line.savings_usd)} |"
        )
    rows.append(
        f"| **total** | | | {invoice.attempts:,} | | **{money(invoice.cost_usd)}** | "
        f"{money(invoice.sync_equivalent_usd)} | **{money(invoice.savings_usd)}** |"
    )
    rows.append("")
    rows.append(
        f"Extra paid: promotions {money(invoice.promotion_extra_usd)} ({invoice.promoted_attempts:,} attempts, "
        f"{money(invoice.paid_twice_usd)} paid twice), retries {money(invoice.retry_extra_usd)} "
        f"({invoice.retry_attempts:,} retry attempts)."
    )
    return "\n".join(rows)
