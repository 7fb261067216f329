"""Nightly reports: each team's day of activity records -> one markdown report per team.

Output-heavy work with nobody waiting: the textbook batch job. Runs on Anthropic's protocol
(Message Batches) so both wire protocols are exercised. A downstream digest joins the reports
once the results pass their checks.
"""

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import dagster as dg
import pandas as pd

from batch_pipelines.core.requests import Endpoint
from batch_pipelines.dagster_layer.factory import batch_workload
from batch_pipelines.dagster_layer.resources import BatchGatewayResource
from batch_pipelines.dagster_layer.workload import BatchWorkload, InvalidOutput
from batch_pipelines.workloads import synthetic
from batch_pipelines.workloads.common import SyntheticInputConfig, chat_text

# The latest partition is yesterday, the last complete day: the one the nightly schedule submits.
daily = dg.DailyPartitionsDefinition(start_date="2026-01-01")
SYSTEM = (
    "You write the nightly engineering report for one team. Summarize the day's activity "
    "records into a short markdown report: a title, then the key points as bullets."
)


@dg.asset(partitions_def=daily, group_name="nightly_reports", kinds={"pandas"})
def team_activity(context: dg.AssetExecutionContext, config: SyntheticInputConfig) -> pd.DataFrame:
    """The day's activity records, one row per team (synthetic, seeded)."""
    return synthetic.activity_by_group(context.partition_key, groups=max(1, config.rows // 15), seed=config.seed)


def _request(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "max_tokens": 400,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": f"Team {row['group_id']} activity:\n{row['activity']}"}],
    }


def _parse(response: dict[str, Any]) -> dict[str, Any]:
    report = chat_text(response).strip()
    if not report:
        raise InvalidOutput("empty report")
    return {"report_markdown": report}


workload = BatchWorkload(
    name="nightly_reports",
    upstream=team_activity,
    partitions_def=daily,
    model="claude-sonnet-4.6",
    endpoint=Endpoint.MESSAGES,
    build_request=_request,
    parse_response=_parse,
    id_column="group_id",
    required_columns=("activity",),
    budget_usd=Decimal("2.00"),
    min_success_rate=0.9,
    expected_output_tokens=300,
    downstream=(dg.AssetKey("daily_reports_digest"),),
    group_name="nightly_reports",
)
defs = batch_workload(workload)


@dg.asset(
    partitions_def=daily,
    ins={"results": dg.AssetIn(workload.results_key)},  # the results table, as a DataFrame
    group_name="nightly_reports",
    kinds={"markdown"},
)
def daily_reports_digest(
    context: dg.AssetExecutionContext, batch_gateway: BatchGatewayResource, results: pd.DataFrame
) -> dg.MaterializeResult[Any]:
    """Every team's report in one markdown digest; runs only after the results pass their checks."""
    done = results[results["status"] == "succeeded"].sort_values("custom_id")
    digest = "\n\n".join(f"## {row.custom_id}\n\n{row.report_markdown}" for row in done.itertuples())
    path = batch_gateway.results_path(workload.name, context.partition_key).with_name(
        f"{context.partition_key}-digest.md"
    )
    path.write_text(f"# Engineering digest {context.partition_key}\n\n{digest}\n", encoding="utf-8")
    return dg.MaterializeResult(
        metadata={
            "teams": len(done),
            "digest_path": dg.MetadataValue.path(str(path)),
            "preview": dg.MetadataValue.md(digest[:2000]),
        }
    )
