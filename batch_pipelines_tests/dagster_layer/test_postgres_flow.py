"""The flow as a multi-worker deployment runs it: Dagster's storage and the ledger on PostgreSQL.

Needs BATCH_PIPELINES_TEST_POSTGRES_URL (CI sets it); each test uses a schema of its own.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from batch_pipelines.dagster_layer import metadata_keys as keys
from batch_pipelines.definitions import build_definitions
from batch_pipelines.workloads import classification
from batch_pipelines_tests.dagster_layer.conftest import make_resource
from batch_pipelines_tests.dagster_layer.flow import latest_metadata, materialize, run_requests_of, tick

DAY = "2026-11-26"


@pytest.fixture
def postgres_instance(postgres_schema_url, tmp_path):
    # SQLAlchemy 2.1 maps a bare postgresql:// URL to psycopg 3, whose server-side binding
    # breaks dagster-postgres's NOTIFY: name the psycopg2 driver it is written for.
    url = make_url(postgres_schema_url).set(drivername="postgresql+psycopg2")
    storage = {"postgres": {"postgres_url": url.render_as_string(hide_password=False)}}
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home), overrides={"storage": storage}) as instance:
        yield instance


@pytest.mark.postgres
def test_flow_on_postgres_storage_and_ledger(emu, postgres_instance, postgres_schema_url, tmp_path):
    """Submit, sensor, results and checks with run storage, event log and ledger all in PostgreSQL."""
    from dagster_postgres import PostgresEventLogStorage

    assert isinstance(postgres_instance.event_log_storage, PostgresEventLogStorage)
    resource = make_resource(emu, tmp_path, ledger_url=postgres_schema_url)
    defs = build_definitions(resource)
    wdefs = classification.defs
    workload = wdefs.workload
    resources = {"batch_gateway": resource}
    assert materialize(
        defs,
        postgres_instance,
        [workload.upstream_key, workload.submit_key],
        DAY,
        resources,
        rows=30,
        upstream=workload.upstream_key,
    ).success
    runs = []
    for _ in range(6):
        result = tick(defs, wdefs.sensor, postgres_instance)
        runs += [run_requests_of(defs, postgres_instance, request, resources) for request in result.run_requests]
        if runs:
            break
        emu.advance(3600)
    assert runs and all(run.success for run in runs)
    meta = latest_metadata(postgres_instance, workload.results_key, DAY)
    assert meta[keys.ITEMS_TOTAL] == 30
    assert meta[keys.outcome_count("succeeded")] == 30
    assert len(pd.read_parquet(meta[keys.RESULTS_PATH])) == 30
    # The ledger lives in PostgreSQL: a second gateway (another worker) sees the same totals.
    other = make_resource(emu, tmp_path / "other-worker", ledger_url=postgres_schema_url).build_gateway()
    try:
        totals = other.ledger.partition_totals(workload.name, DAY)
        assert totals.item_count == 30 and str(totals.cost_usd) == meta[keys.COST_USD_EXACT]
    finally:
        other.close()
    evaluations = {e.check_name: e.passed for run in runs for e in run.get_asset_check_evaluations()}
    assert evaluations == {"success_rate_at_least": True, "cost_within_budget": True}
