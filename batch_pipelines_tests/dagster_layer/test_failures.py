"""Core errors become the Dagster failure that names their cause, on a real instance and emulator."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from batch_pipelines.core.errors import (
    BatchPipelinesError,
    BudgetExceededError,
    ConfigError,
    InvalidInputError,
    LedgerError,
    MalformedResponseError,
    ProviderError,
    QueueFullError,
    UnknownModelError,
)
from batch_pipelines.dagster_layer.errors import (
    BatchPipelinesFailure,
    BudgetExceeded,
    ConfigurationFailure,
    InvalidPartitionInput,
    LedgerFailure,
    ProviderFailure,
    failure_for,
)
from batch_pipelines.dagster_layer.factory import batch_workload
from batch_pipelines.dagster_layer.workload import BatchWorkload
from batch_pipelines_tests.dagster_layer.flow import materialize

DAY = "2026-11-26"
DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01")


@pytest.mark.parametrize(
    ("error", "failure_type", "allow_retries"),
    [
        (ConfigError("no key for 'openai'", provider="openai"), ConfigurationFailure, False),
        (UnknownModelError("gpt-x", ["gpt-5.4-mini"]), ConfigurationFailure, False),
        (InvalidInputError("empty partition"), InvalidPartitionInput, False),
        (BudgetExceededError("over budget", budget_usd="1.00"), BudgetExceeded, False),
        (ProviderError("vendor said no", status_code=400), ProviderFailure, False),  # refused again on retry
        (ProviderError("vendor overloaded", status_code=503), ProviderFailure, True),
        (ProviderError("no answer"), ProviderFailure, True),
        (MalformedResponseError("bad shape"), ProviderFailure, True),
        (QueueFullError("queue full"), ProviderFailure, True),
        (LedgerError("batch b1 claimed twice", batch_id="b1"), LedgerFailure, True),
        (BatchPipelinesError("something else"), BatchPipelinesFailure, True),
    ],
)
def test_each_core_error_maps_to_its_own_failure(error, failure_type, allow_retries):
    """Config and ledger errors are not reported as provider failures; evidence and retry advice travel along."""
    failure = failure_for(error)
    assert type(failure) is failure_type
    assert failure.description == error.message
    assert failure.allow_retries is allow_retries
    for key, value in error.details.items():
        if value is not None:
            assert key in failure.metadata


def test_unknown_model_fails_the_submit_as_configuration_not_provider(emu, instance, resource):
    """A model the price book does not know fails the submit with ConfigurationFailure, and nothing is sent."""

    @dg.asset(name="unknown_rows", partitions_def=DAILY)
    def rows() -> pd.DataFrame:
        return pd.DataFrame({"id": ["a", "b"], "text": ["one", "two"]})

    workload = BatchWorkload(
        name="unknown_model",
        upstream=rows,
        partitions_def=DAILY,
        model="gpt-nobody-knows",
        build_request=lambda row: {"messages": [{"role": "user", "content": row["text"]}]},
        parse_response=lambda response: {},
        required_columns=("text",),
    )
    wdefs = batch_workload(workload)
    defs = dg.Definitions(assets=[rows, *wdefs.assets], resources={"batch_gateway": resource})
    with pytest.raises(ConfigurationFailure, match="gpt-nobody-knows") as raised:
        materialize(defs, instance, [rows.key, workload.submit_key], DAY, {"batch_gateway": resource})
    assert not isinstance(raised.value, ProviderFailure)
    assert sum(emu.stats()["batches_created"].values()) == 0
