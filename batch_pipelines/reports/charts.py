"""PNG charts of money: spend per hour of day in stacked bands, and a bar per label.

matplotlib runs on its Agg backend (no display, no GUI toolkit), chosen per figure through
``Figure`` rather than pyplot's global state, so charts can be drawn from any thread (a Dagster
run worker, a test) without touching the process-wide backend. Amounts arrive as Decimal and are
turned to float only here, for drawing.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from decimal import Decimal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# One palette for every chart: what must stay on sync, what could move, what already moved.
BAND_COLOURS = {"interactive": "#8c8c8c", "movable": "#e4572e", "batched": "#2e86ab"}
_DPI = 100


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def spend_by_hour_png(bands: Mapping[str, Sequence[Decimal]], title: str) -> bytes:
    """A stacked bar per hour of day (UTC), one band per key of ``bands`` (24 values each)."""
    figure = Figure(figsize=(8, 3.6))
    axes = figure.add_subplot()
    hours = list(range(24))
    bottom = [0.0] * 24
    for band, values in bands.items():
        heights = [float(v) for v in values]
        axes.bar(hours, heights, bottom=bottom, label=band, color=BAND_COLOURS.get(band), width=0.85)
        bottom = [b + h for b, h in zip(bottom, heights)]
    axes.set_xticks(hours[::2])
    axes.set_xlabel("hour of day (UTC)")
    axes.set_ylabel("USD")
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return _png(figure)


def bars_png(values: Mapping[str, Decimal], title: str, xlabel: str = "USD", colour: str = "#e4572e") -> bytes:
    """One horizontal bar per label, largest on top."""
    ordered = sorted(values.items(), key=lambda kv: kv[1])
    figure = Figure(figsize=(8, max(2.0, 0.4 * len(ordered) + 1.2)))
    axes = figure.add_subplot()
    labels = [label for label, _ in ordered] or ["(none)"]
    amounts = [float(amount) for _, amount in ordered] or [0.0]
    axes.barh(labels, amounts, color=colour)
    for y, amount in enumerate(amounts):
        axes.annotate(
            f"${amount:,.2f}", (amount, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8
        )
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    axes.spines[["top", "right"]].set_visible(False)
    return _png(figure)


def paired_bars_png(values: Mapping[str, tuple[Decimal, Decimal]], labels: tuple[str, str], title: str) -> bytes:
    """Two horizontal bars per row (e.g. what was paid beside what all-sync would have cost)."""
    rows = sorted(values.items(), key=lambda kv: kv[1][1])
    figure = Figure(figsize=(8, max(2.0, 0.6 * len(rows) + 1.2)))
    axes = figure.add_subplot()
    names = [name for name, _ in rows] or ["(none)"]
    first = [float(pair[0]) for _, pair in rows] or [0.0]
    second = [float(pair[1]) for _, pair in rows] or [0.0]
    positions = list(range(len(names)))
    axes.barh([p + 0.2 for p in positions], second, height=0.4, label=labels[1], color=BAND_COLOURS["interactive"])
    axes.barh([p - 0.2 for p in positions], first, height=0.4, label=labels[0], color=BAND_COLOURS["batched"])
    axes.set_yticks(positions, names)
    axes.set_xlabel("USD")
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return _png(figure)
