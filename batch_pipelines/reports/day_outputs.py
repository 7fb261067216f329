"""The reference day's files: the per-call table (Parquet) and cumulative spend by lane (PNG).

Money stays exact in the table (decimal128 columns); it becomes float only for drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from batch_pipelines.core.day_report import CallRecord, lane_group

MONEY = pa.decimal128(38, 18)
SCHEMA = pa.schema(
    [
        ("call_id", pa.string()),
        ("kind", pa.string()),
        ("model", pa.string()),
        ("enqueued_s", pa.float64()),
        ("deadline_s", pa.float64()),
        ("answered_s", pa.float64()),
        ("status", pa.string()),
        ("lane", pa.string()),
        ("cost_usd", MONEY),
        ("sync_cost_usd", MONEY),
        ("batch_cost_usd", MONEY),
        ("oracle_lane", pa.string()),
        ("missed", pa.bool_()),
    ]
)


def write_calls_parquet(records: Sequence[CallRecord], path: Path) -> Path:
    columns = {
        "call_id": [r.call_id for r in records],
        "kind": [r.kind for r in records],
        "model": [r.model for r in records],
        "enqueued_s": [r.enqueued_s for r in records],
        "deadline_s": [r.deadline_s for r in records],
        "answered_s": [r.answered_s for r in records],
        "status": [r.status for r in records],
        "lane": [r.lane for r in records],
        "cost_usd": [r.cost for r in records],
        "sync_cost_usd": [r.sync_cost for r in records],
        "batch_cost_usd": [r.batch_cost for r in records],
        "oracle_lane": [r.oracle_lane for r in records],
        "missed": [r.missed for r in records],
    }
    pq.write_table(pa.table(columns, schema=SCHEMA), path)
    return path


def cumulative_spend_png(records: Sequence[CallRecord], path: Path) -> Path:
    """Cumulative spend over the day (by when each call was answered) per lane, against all-sync and the optimum."""
    ordered = sorted(records, key=lambda r: r.answered_s if r.answered_s is not None else r.enqueued_s)
    figure = Figure(figsize=(9, 4.2))
    axes = figure.add_subplot()
    hours = [(r.answered_s if r.answered_s is not None else r.enqueued_s) / 3600 for r in ordered]

    def running(values: list[Decimal]) -> list[float]:
        total, out = Decimal(0), []
        for value in values:
            total += value
            out.append(float(total))
        return out

    for group in sorted({lane_group(r) for r in ordered}):
        axes.plot(hours, running([r.cost if lane_group(r) == group else Decimal(0) for r in ordered]), label=group)
    axes.plot(hours, running([r.cost for r in ordered]), label="realised (all lanes)", color="black")
    axes.plot(hours, running([r.sync_cost for r in ordered]), label="all-sync", color="#e4572e", linestyle="--")
    axes.plot(hours, running([r.oracle_cost for r in ordered]), label="optimum", color="#2e86ab", linestyle=":")
    axes.set_xlabel("hours since the day began")
    axes.set_ylabel("cumulative USD")
    axes.set_title("The reference day: cumulative spend by lane")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=100, bbox_inches="tight")
    return path
