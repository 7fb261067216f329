"""The ``batch-pipelines`` command line."""

from __future__ import annotations

import sys
from decimal import ROUND_HALF_UP, Decimal, DecimalException

import click
import orjson

from batch_pipelines.cli_params import CENT, TokenCount, exact, money, pricing_options
from batch_pipelines.core.errors import BatchPipelinesError
from batch_pipelines.core.pricing import CostBreakdown, Discounts, PriceBook
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.usage import Usage


@click.group()
def main() -> None:
    """Run LLM work on the cheapest lane that still meets its deadline."""


@main.command()
@click.option("--model", required=True, help="Model name from the price book.")
@click.option("--input-tokens", type=TokenCount(), required=True, help="Prompt tokens (30M, 500k).")
@click.option("--output-tokens", type=TokenCount(), required=True, help="Completion tokens.")
@click.option("--cached-input-tokens", type=TokenCount(), default=0, help="Part of the input read from a prompt cache.")
@pricing_options
def cost(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int,
    structural_discount: Decimal,
    credit_bonus: Decimal,
    prices: str | None,
    as_json: bool,
) -> None:
    """Price a workload on the sync and the batch lane, side by side."""
    try:
        usage = Usage(input_tokens=input_tokens, cached_input_tokens=cached_input_tokens, output_tokens=output_tokens)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        book = PriceBook.default(prices)
        batch = book.cost(model, usage, Lane.BATCH, Discounts(structural_discount, credit_bonus))
        lines = _cost_lines(batch, as_json)
    except BatchPipelinesError as exc:
        raise click.UsageError(exc.message) from None
    except DecimalException:
        # Only a price book with absurd rates gets here (token counts are bounded): say so, no traceback.
        raise click.UsageError("the cost is too large to compute exactly; check the price book's rates") from None
    for line in lines:
        click.echo(line)


def _cost_lines(batch: CostBreakdown, as_json: bool) -> list[str]:
    """The output, computed in full before anything is printed (a failure prints nothing)."""
    if as_json:
        payload = {
            "model": batch.model,
            "input_tokens": batch.usage.input_tokens,
            "cached_input_tokens": batch.usage.cached_input_tokens,
            "output_tokens": batch.usage.output_tokens,
            "sync_usd": exact(batch.sync_equivalent_usd),
            "batch_usd": exact(batch.cost_usd),
            "savings_usd": exact(batch.savings_usd),
            "savings_pct": str(batch.savings_pct.quantize(CENT, rounding=ROUND_HALF_UP)),
        }
        return [orjson.dumps(payload).decode()]
    u = batch.usage
    return [
        f"model {batch.model}: {u.input_tokens:,} input ({u.cached_input_tokens:,} cached) + "
        f"{u.output_tokens:,} output tokens",
        f"{'lane':<8}{'cost':>16}",
        f"{'sync':<8}{money(batch.sync_equivalent_usd):>16}",
        f"{'batch':<8}{money(batch.cost_usd):>16}",
        f"savings {money(batch.savings_usd)} ({batch.savings_pct.quantize(CENT, rounding=ROUND_HALF_UP)}%)",
    ]


@main.command()
@click.option("--keep", type=click.Path(file_okay=False), default=None, help="Keep the demo's files in this folder.")
def demo(keep: str | None) -> None:
    """Run one partition of all four workloads end to end on the bundled emulator."""
    from pathlib import Path

    from batch_pipelines.demo import main as run

    sys.exit(run(Path(keep) if keep else None, echo=click.echo))


@main.command()
@click.option("--ui-port", default=3000, show_default=True)
@click.option("--emulator-port", default=8765, show_default=True)
@click.option("--time-scale", default=60.0, show_default=True, help="Emulator virtual seconds per real second.")
def dev(ui_port: int, emulator_port: int, time_scale: float) -> None:
    """Start the emulator and the Dagster UI (webserver + daemon) on 127.0.0.1."""
    from pathlib import Path

    from batch_pipelines.dev import run_dev

    sys.exit(run_dev(Path.cwd(), ui_port=ui_port, emulator_port=emulator_port, time_scale=time_scale))


from batch_pipelines.emulator.cli import emulator_command  # noqa: E402

main.add_command(emulator_command, "emulator")

from batch_pipelines.router_cli import deferred_command, serve_command  # noqa: E402

main.add_command(deferred_command, "deferred")
main.add_command(serve_command, "serve")

from batch_pipelines.cli_advise import advise_command  # noqa: E402

main.add_command(advise_command, "advise")

from batch_pipelines.cli_audit import audit_command  # noqa: E402

main.add_command(audit_command, "audit")

from batch_pipelines.cli_invoice import invoice_command  # noqa: E402

main.add_command(invoice_command, "invoice")

from batch_pipelines.cli_simulate import simulate_day_command  # noqa: E402

main.add_command(simulate_day_command, "simulate-day")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
