"""Bulk classification: support tickets -> one label each from a fixed set.

A long, stable system prompt comes first so providers' prompt caches hit; an answer outside
the label set is ``invalid_output`` and retried within the policy's limit.
"""

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import dagster as dg
import pandas as pd

from batch_pipelines.dagster_layer.factory import batch_workload
from batch_pipelines.dagster_layer.workload import BatchWorkload, InvalidOutput
from batch_pipelines.workloads import synthetic
from batch_pipelines.workloads.common import SyntheticInputConfig, chat_text

# The latest partition is yesterday, the last complete day: the one the nightly schedule submits.
daily = dg.DailyPartitionsDefinition(start_date="2026-01-01")
LABELS = synthetic.LABELS
GUIDE = "\n".join(
    f"- {label}: "
    + {
        "billing": "charges, invoices, refunds, plans and payment methods.",
        "bug": "the product misbehaves: crashes, errors, wrong results, broken buttons.",
        "account_access": "logging in, passwords, two-factor codes, locked or disabled accounts.",
        "feature_request": "asks for something the product does not do yet.",
        "shipping": "orders, deliveries, tracking, addresses, returns in transit.",
        "other": "anything that fits none of the above.",
    }[label]
    for label in LABELS
)
# Long and identical for every ticket, so it forms a cacheable prefix (>1,024 tokens).
SYSTEM = (
    "You are the triage assistant of a support team. Read the ticket and answer with exactly one "
    "label from the list, in lower case, with no other words.\n"
    f"Labels: {', '.join(LABELS)}\n\nWhat each label covers:\n{GUIDE}\n\n"
    + "Triage policy, applied in order:\n"
    + "\n".join(
        f"{i}. If a ticket mentions more than one topic, choose the one the customer needs solved first; "
        "money and access problems come before feature requests, and an outage comes before everything else."
        for i in range(1, 41)
    )
)


@dg.asset(partitions_def=daily, group_name="classification", kinds={"pandas"})
def support_tickets(context: dg.AssetExecutionContext, config: SyntheticInputConfig) -> pd.DataFrame:
    """The day's support tickets (synthetic, seeded)."""
    return synthetic.support_tickets(context.partition_key, rows=config.rows, seed=config.seed)


def _request(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "max_completion_tokens": 5,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Ticket: {row['body']}"}],
    }


def _parse(response: dict[str, Any]) -> dict[str, Any]:
    label = chat_text(response).strip().lower()
    if label not in LABELS:
        raise InvalidOutput(f"label {label!r} is not one of {', '.join(LABELS)}")
    return {"label": label}


workload = BatchWorkload(
    name="classification",
    upstream=support_tickets,
    partitions_def=daily,
    model="gpt-5.4-mini",
    build_request=_request,
    parse_response=_parse,
    id_column="ticket_id",
    required_columns=("body",),
    budget_usd=Decimal("1.00"),
    min_success_rate=0.9,
    expected_output_tokens=5,
    group_name="classification",
)
defs = batch_workload(workload)
