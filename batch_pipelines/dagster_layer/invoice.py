"""The nightly invoice in Dagster: a ``daily_invoice`` asset, one partition per day (UTC), from the ledger.

It reads what the ledger recorded as spent that day (``services.invoice``) and materializes the
totals as floats the UI plots across days (``cost_usd``, ``sync_equivalent_usd``,
``savings_usd``, ``savings_pct``), the exact Decimal as text, the invoice as a markdown table,
and the chart of spend by workload twice: as an image inside a markdown value (``chart``, the
PNG inlined as base64, which the UI renders) and as the path of the PNG file under the
resource's results folder (``chart_path``). It is downstream of the workloads' results assets and
of the router's ``deferred_calls`` where those are given: the lineage says where the money came
from, and a run can materialize the invoice after the day's results.
"""

import base64
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import dagster as dg

from batch_pipelines.core.errors import BatchPipelinesError
from batch_pipelines.dagster_layer import metadata_keys as keys
from batch_pipelines.dagster_layer.errors import failure_for
from batch_pipelines.dagster_layer.resources import BatchGatewayResource
from batch_pipelines.services.invoice import build_invoice
from batch_pipelines.services.invoice_views import invoice_markdown, invoice_png

DAILY_INVOICE_KEY = dg.AssetKey("daily_invoice")


def daily_invoice_asset(
    *,
    start_date: str,
    deps: Sequence[dg.AssetKey | dg.AssetsDefinition] = (),
    group_name: str = "invoices",
    end_offset: int = 1,
) -> dg.AssetsDefinition:
    """The ``daily_invoice`` asset, daily partitions from ``start_date``, downstream of ``deps``.

    ``end_offset=1`` (as the workloads) makes today's partition exist: its invoice is the day so far.
    """
    daily = dg.DailyPartitionsDefinition(start_date=start_date, timezone="UTC", end_offset=end_offset)

    @dg.asset(
        key=DAILY_INVOICE_KEY,
        partitions_def=daily,
        deps=list(deps),
        group_name=group_name,
        kinds={"png"},
        description=(
            "What the day (UTC) cost per lane, model and workload, the same usage all on the sync lane, "
            "the saving, and the extra paid for promotions and retries."
        ),
    )
    def daily_invoice(
        context: dg.AssetExecutionContext, batch_gateway: BatchGatewayResource
    ) -> dg.MaterializeResult[Any]:
        day = context.partition_time_window.start.astimezone(UTC).date()
        gateway = batch_gateway.gateway
        try:
            invoice = build_invoice(gateway.ledger, gateway.price_book, day)
        except BatchPipelinesError as exc:
            raise failure_for(exc) from None
        png = invoice_png(invoice)
        chart_path = gateway.results_dir / "invoices" / f"{day.isoformat()}.png"
        chart_path.parent.mkdir(parents=True, exist_ok=True)
        chart_path.write_bytes(png)
        inline = base64.b64encode(png).decode()
        context.log.info(f"invoice {day}: {invoice.attempts} attempts, cost {invoice.cost_usd}")
        return dg.MaterializeResult(
            metadata={
                keys.COST_USD: dg.MetadataValue.float(float(invoice.cost_usd)),
                keys.COST_USD_EXACT: dg.MetadataValue.text(str(invoice.cost_usd)),
                keys.SYNC_EQUIVALENT_USD: dg.MetadataValue.float(float(invoice.sync_equivalent_usd)),
                keys.SAVINGS_USD: dg.MetadataValue.float(float(invoice.savings_usd)),
                keys.SAVINGS_PCT: dg.MetadataValue.float(float(invoice.savings_pct)),
                keys.INVOICE_PROMOTION_EXTRA_USD: dg.MetadataValue.float(float(invoice.promotion_extra_usd)),
                keys.PAID_TWICE_USD: dg.MetadataValue.float(float(invoice.paid_twice_usd)),
                keys.INVOICE_RETRY_EXTRA_USD: dg.MetadataValue.float(float(invoice.retry_extra_usd)),
                keys.SUMMARY: dg.MetadataValue.md(invoice_markdown(invoice)),
                keys.INVOICE_CHART: dg.MetadataValue.md(f"![spend by workload](data:image/png;base64,{inline})"),
                keys.INVOICE_CHART_PATH: dg.MetadataValue.path(str(chart_path)),
            }
        )

    return daily_invoice
