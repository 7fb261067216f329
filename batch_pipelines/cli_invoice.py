"""``batch-pipelines invoice``: one day's spend from the ledger, the all-sync equivalent and the saving."""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import click
import orjson

from batch_pipelines.cli_params import exact
from batch_pipelines.core.errors import BatchPipelinesError
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.ledger import Ledger
from batch_pipelines.services.invoice import Invoice, build_invoice
from batch_pipelines.services.invoice_views import invoice_png, money

_PCT = Decimal("0.01")


def _day(_ctx: Any, _param: Any, value: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date in the form YYYY-MM-DD") from None


@click.command("invoice")
@click.option("--date", "day", required=True, callback=_day, help="The day (UTC), YYYY-MM-DD.")
@click.option("--ledger", "ledger_url", default=None, help="Ledger URL (default: the SQLite file in the data folder).")
@click.option("--prices", type=click.Path(dir_okay=False), default=None, help="YAML price book over the default.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the chart here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with decimal strings.")
def invoice_command(day: date, ledger_url: str | None, prices: str | None, png: Path | None, as_json: bool) -> None:
    """What one day cost per lane, model and workload, beside the same usage all on the sync lane."""
    try:
        book = PriceBook.default(prices)
        with Ledger(ledger_url) as ledger:
            invoice = build_invoice(ledger, book, day)
            where = ledger.url_for_display
    except BatchPipelinesError as exc:
        raise click.UsageError(exc.message) from None
    if png is not None:
        png.write_bytes(invoice_png(invoice))
    if as_json:
        click.echo(orjson.dumps(invoice_json(invoice)).decode())
        return
    for line in invoice_text(invoice, where):
        click.echo(line)


def invoice_json(invoice: Invoice) -> dict[str, Any]:
    return {
        "date": invoice.day.isoformat(),
        "cost_usd": exact(invoice.cost_usd),
        "sync_equivalent_usd": exact(invoice.sync_equivalent_usd),
        "savings_usd": exact(invoice.savings_usd),
        "savings_pct": str(invoice.savings_pct.quantize(_PCT, rounding=ROUND_HALF_UP)),
        "by_lane": {lane.value: exact(cost) for lane, cost in invoice.by_lane().items()},
        "promotion_extra_usd": exact(invoice.promotion_extra_usd),
        "paid_twice_usd": exact(invoice.paid_twice_usd),
        "retry_extra_usd": exact(invoice.retry_extra_usd),
        "promoted_attempts": invoice.promoted_attempts,
        "retry_attempts": invoice.retry_attempts,
        "lines": [
            {
                "workload": line.workload,
                "lane": line.lane.value,
                "model": line.model,
                "attempts": line.attempts,
                "input_tokens": line.usage.input_tokens,
                "cached_input_tokens": line.usage.cached_input_tokens,
                "output_tokens": line.usage.output_tokens,
                "cost_usd": exact(line.cost_usd),
                "sync_equivalent_usd": exact(line.sync_equivalent_usd),
                "savings_usd": exact(line.savings_usd),
            }
            for line in invoice.lines
        ],
    }


def invoice_text(invoice: Invoice, where: str) -> list[str]:
    pct = invoice.savings_pct.quantize(_PCT, rounding=ROUND_HALF_UP)
    out = [f"invoice for {invoice.day.isoformat()} (UTC) from {where}"]
    out.append(f"{'workload':<26}{'lane':<7}{'model':<20}{'attempts':>9}{'cost':>12}{'all on sync':>13}{'saving':>12}")
    for line in invoice.lines:
        out.append(
            f"{line.workload[:25]:<26}{line.lane.value:<7}{line.model[:19]:<20}{line.attempts:>9,}"
            f"{money(line.cost_usd):>12}{money(line.sync_equivalent_usd):>13}{money(line.savings_usd):>12}"
        )
    lanes = ", ".join(f"{lane.value} {money(cost)}" for lane, cost in sorted(invoice.by_lane().items()))
    out.append(f"by lane: {lanes or 'nothing recorded'}")
    out.append(
        f"total {money(invoice.cost_usd)}; all on the sync lane {money(invoice.sync_equivalent_usd)}; "
        f"saving {money(invoice.savings_usd)} ({pct}%)"
    )
    out.append(
        f"extra paid: promotions {money(invoice.promotion_extra_usd)} ({invoice.promoted_attempts:,} attempts, "
        f"{money(invoice.paid_twice_usd)} of it paid twice), retries {money(invoice.retry_extra_usd)} "
        f"({invoice.retry_attempts:,} retry attempts)"
    )
    return out
