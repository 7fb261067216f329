"""Where the gateway sends work is an explicit choice, and each provider's key has one way in."""

from __future__ import annotations

import re

import dagster as dg
import pandas as pd
import pytest

from batch_pipelines import BatchGatewayResource, BatchWorkload, ConfigurationFailure, batch_workload
from batch_pipelines.dagster_layer import metadata_keys as keys
from batch_pipelines_tests.dagster_layer.flow import latest_metadata, materialize

DAY = "2026-11-26"
DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01")
SECRET = "sk-acme-SECRET-0123456789"


def _storage(tmp_path) -> dict[str, str]:
    return {
        "ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite'}",
        "results_dir": str(tmp_path / "results"),
        "work_dir": str(tmp_path / "work"),
    }


def _tiny_defs(resource: BatchGatewayResource):
    @dg.asset(name="tickets", partitions_def=DAILY)
    def rows() -> pd.DataFrame:
        return pd.DataFrame({"id": [f"t{i}" for i in range(5)], "text": [f"billing issue {i}" for i in range(5)]})

    workload = BatchWorkload(
        name="tickets_labelled",
        upstream=rows,
        partitions_def=DAILY,
        model="gpt-5.4-mini",
        build_request=lambda row: {"messages": [{"role": "user", "content": f"Labels: billing, bug\n{row['text']}"}]},
        parse_response=lambda response: {"label": response["choices"][0]["message"]["content"]},
        required_columns=("text",),
    )
    wdefs = batch_workload(workload)
    defs = dg.Definitions(assets=[rows, *wdefs.assets], resources={"batch_gateway": resource})
    return defs, rows, workload


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ({}, "no providers configured: set providers_file .* or emulator_url"),
        ({"providers_file": "providers.yaml", "emulator_url": "http://127.0.0.1:8765"}, "not both"),
    ],
)
def test_resource_refuses_to_guess_where_work_goes(instance, tmp_path, choice, message):
    """With neither (or both of) providers_file and emulator_url, the run fails at resource start-up, saying so."""
    resource = BatchGatewayResource(**choice, **_storage(tmp_path))
    defs, rows, workload = _tiny_defs(resource)
    with pytest.raises(dg.DagsterResourceFunctionError) as raised:
        materialize(defs, instance, [rows.key, workload.submit_key], DAY, {"batch_gateway": resource})
    failure = raised.value.user_exception
    assert isinstance(failure, ConfigurationFailure)
    assert re.search(message, failure.description or "")


def test_missing_key_names_the_provider_and_loses_nothing(emu, instance, tmp_path, monkeypatch):
    """A provider without its key fails the submit naming provider and variable (not a value); with the key set,
    the same partition submits."""
    providers = tmp_path / "providers.yaml"
    # A provider named after no preset: its key variable follows the naming rule (ACME_API_KEY).
    providers.write_text(
        f"providers:\n  acme:\n    protocol: openai\n    base_url: {emu.openai_base_url}\n    models: ['*']\n",
        encoding="utf-8",
    )
    monkeypatch.delenv("ACME_API_KEY", raising=False)
    resource = BatchGatewayResource(providers_file=str(providers), **_storage(tmp_path))
    defs, rows, workload = _tiny_defs(resource)
    with pytest.raises(ConfigurationFailure) as raised:
        materialize(defs, instance, [rows.key, workload.submit_key], DAY, {"batch_gateway": resource})
    assert "'acme'" in raised.value.description and "ACME_API_KEY" in raised.value.description
    assert raised.value.metadata["provider"].value == "acme"
    assert sum(emu.stats()["batches_created"].values()) == 0

    monkeypatch.setenv("ACME_API_KEY", SECRET)
    assert materialize(defs, instance, [rows.key, workload.submit_key], DAY, {"batch_gateway": resource}).success
    submitted = latest_metadata(instance, workload.submit_key, DAY)
    assert submitted is not None and submitted[keys.ITEM_COUNT] == 5
    assert sum(emu.stats()["batches_created"].values()) == 1
    assert SECRET not in str(submitted)
