"""The whole flow on a real DagsterInstance and the emulator over loopback HTTP."""

from __future__ import annotations

import re
from decimal import Decimal

import dagster as dg
import pandas as pd
import pytest

from batch_pipelines.dagster_layer import metadata_keys as keys
from batch_pipelines.dagster_layer.errors import BudgetExceeded, InvalidPartitionInput
from batch_pipelines.dagster_layer.factory import batch_workload
from batch_pipelines.dagster_layer.workload import BatchWorkload
from batch_pipelines.definitions import build_definitions
from batch_pipelines.workloads import classification, embedding_backfill, evals, nightly_reports, synthetic
from batch_pipelines_tests.dagster_layer.conftest import make_resource
from batch_pipelines_tests.dagster_layer.flow import latest_metadata, materialize, run_requests_of, tick

DAY = "2026-11-26"


def _submit(defs, instance, resource, workload, partition, rows):
    return materialize(
        defs,
        instance,
        [workload.upstream_key, workload.submit_key],
        partition,
        {"batch_gateway": resource},
        rows=rows,
        upstream=workload.upstream_key,
    )


def _drive_to_results(defs, instance, resource, emu, wdefs, partition, *, max_ticks=10):
    """Tick the sensor, advancing the emulator's clock, until it requests runs; run them."""
    runs = []
    for _ in range(max_ticks):
        result = tick(defs, wdefs.sensor, instance)
        if result.run_requests:
            for request in result.run_requests:
                assert request.partition_key == partition
                runs.append(run_requests_of(defs, instance, request, {"batch_gateway": resource}))
            if latest_metadata(instance, wdefs.workload.results_key, partition):
                return runs, result
        emu.advance(3600)
    raise AssertionError("the results asset never materialized")


def test_classification_end_to_end(emu, instance, resource, tmp_path):
    """Submit, observe progress, request the results run once, write Parquet, pass the checks, save ~50%."""
    defs = build_definitions(resource)
    wdefs = classification.defs
    submitted = _submit(defs, instance, resource, wdefs.workload, DAY, rows=40)
    assert submitted.success
    submit_meta = latest_metadata(instance, wdefs.workload.submit_key, DAY)
    assert submit_meta[keys.ITEM_COUNT] == 40
    assert len(submit_meta[keys.BATCH_IDS]) == 1
    assert submit_meta[keys.ESTIMATED_COST_USD] > 0

    first = tick(defs, wdefs.sensor, instance)
    assert first.run_requests == []  # the batch is still running at virtual t=0
    (observation,) = first.asset_events
    assert observation.partition == DAY
    assert observation.metadata[keys.PROGRESS_TOTAL].value in (0, 40)

    runs, last = _drive_to_results(defs, instance, resource, emu, wdefs, DAY)
    assert len(runs) == 1 and runs[0].success
    assert tick(defs, wdefs.sensor, instance).run_requests == []  # collected: nothing more to run

    meta = latest_metadata(instance, wdefs.workload.results_key, DAY)
    assert meta[keys.ITEMS_TOTAL] == 40
    assert (
        sum(
            meta[keys.outcome_count(k)]
            for k in ("succeeded", "failed", "invalid_output", "expired", "cancelled", "missing")
        )
        == 40
    )
    assert meta[keys.SUCCESS_RATE] >= 0.9
    assert meta[keys.COST_USD] > 0
    assert meta[keys.SYNC_EQUIVALENT_USD] == pytest.approx(2 * meta[keys.COST_USD], rel=1e-9)
    assert meta[keys.SAVINGS_PCT] == pytest.approx(50.0)
    assert meta["openai.gpt-5.4-mini.prompt_tokens"] > 40 * 1000  # the long system prompt, every ticket
    assert meta["openai.gpt-5.4-mini.cached_tokens"] > 0  # ...and the prompt cache hit after the first
    assert meta["openai.gpt-5.4-mini.calls"] >= 40  # one per billed attempt, dagster-openai's key

    table = pd.read_parquet(meta[keys.RESULTS_PATH])
    assert len(table) == 40 and table["custom_id"].is_unique
    assert meta[keys.ROW_COUNT] == 40
    assert [c.name for c in meta[keys.COLUMN_SCHEMA].columns] == list(table.columns)
    done = table[table["status"] == "succeeded"]
    assert set(done["label"]) <= set(synthetic.LABELS)
    assert Decimal(meta[keys.COST_USD_EXACT]) == sum(table["cost_usd"].map(Decimal))

    evaluations = {e.check_name: e for run in runs for e in run.get_asset_check_evaluations()}
    assert evaluations["success_rate_at_least"].passed
    assert evaluations["cost_within_budget"].passed


def test_nightly_reports_runs_downstream_digest_after_checks(emu, instance, resource, tmp_path):
    """The Anthropic-protocol workload ends with the digest materialized in the same run as its checks."""
    defs = build_definitions(resource)
    wdefs = nightly_reports.defs
    assert _submit(defs, instance, resource, wdefs.workload, DAY, rows=60).success
    runs, _ = _drive_to_results(defs, instance, resource, emu, wdefs, DAY)
    assert runs[-1].success
    meta = latest_metadata(instance, wdefs.workload.results_key, DAY)
    assert meta[keys.outcome_count("succeeded")] == meta[keys.ITEMS_TOTAL] == 4
    assert meta["anthropic.claude-sonnet-4.6.completion_tokens"] > 0
    digest = latest_metadata(instance, dg.AssetKey("daily_reports_digest"), DAY)
    assert digest["teams"] == 4
    assert "# Engineering digest" in open(digest["digest_path"]).read()


def test_embeddings_are_fixed_size_float32_vectors(emu, instance, resource):
    """Embedding results land as a Parquet fixed-size list of float32, one per chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    defs = build_definitions(resource)
    wdefs = embedding_backfill.defs
    assert _submit(defs, instance, resource, wdefs.workload, "shard-001", rows=30).success
    _drive_to_results(defs, instance, resource, emu, wdefs, "shard-001")
    meta = latest_metadata(instance, wdefs.workload.results_key, "shard-001")
    table = pq.read_table(meta[keys.RESULTS_PATH])
    assert table.num_rows == 30
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), embedding_backfill.DIMENSIONS)


def test_evals_add_aggregate_metrics(emu, instance, resource):
    """The evals (gemini-3-flash, on Gemini's native batch protocol) carry mean score and pass rate beside the
    standard metadata, with tokens under the gemini protocol."""
    defs = build_definitions(resource)
    wdefs = evals.defs
    created = emu.stats()["batches_created"].get("gemini", 0)
    assert _submit(defs, instance, resource, wdefs.workload, DAY, rows=30).success
    assert emu.stats()["batches_created"]["gemini"] == created + 1, "the evals went to Gemini's native batch API"
    _drive_to_results(defs, instance, resource, emu, wdefs, DAY)
    meta = latest_metadata(instance, wdefs.workload.results_key, DAY)
    assert meta["eval_cases_scored"] == meta[keys.outcome_count("succeeded")] == 30
    assert 1.0 <= meta["eval_mean_score"] <= 5.0
    assert 0.0 <= meta["eval_pass_rate"] <= 1.0
    assert meta[keys.token_key("gemini", "gemini-3-flash", "prompt_tokens")] > 0
    assert meta[keys.token_key("gemini", "gemini-3-flash", "calls")] > 0
    assert not any(k.startswith("openai.gemini") for k in meta)  # prefixed by the model's provider
    assert meta[keys.COST_USD] > 0


def _tiny_workload(name: str, **overrides) -> tuple[BatchWorkload, dg.AssetsDefinition]:
    daily = classification.daily

    @dg.asset(name=f"{name}_rows", partitions_def=daily)
    def rows() -> pd.DataFrame:
        return pd.DataFrame(
            {"id": [f"r{i}" for i in range(20)], "text": [f"ticket about billing {i}" for i in range(20)]}
        )

    fields = dict(
        name=name,
        upstream=rows,
        partitions_def=daily,
        model="gpt-5.4-mini",
        build_request=lambda row: {"messages": [{"role": "user", "content": f"Labels: billing, bug\n{row['text']}"}]},
        parse_response=lambda response: {"label": response["choices"][0]["message"]["content"]},
        required_columns=("text",),
    )
    fields.update(overrides)
    return BatchWorkload(**fields), rows


def test_submit_refuses_over_budget_and_sends_nothing(emu, instance, resource):
    """An estimate above the budget fails the submit asset with BudgetExceeded before any provider call."""
    workload, rows = _tiny_workload("overbudget", budget_usd=Decimal("0.0000001"))
    wdefs = batch_workload(workload)
    defs = dg.Definitions(
        assets=[rows, *wdefs.assets],
        asset_checks=list(wdefs.checks),
        sensors=[wdefs.sensor],
        resources={"batch_gateway": resource},
    )
    with pytest.raises(BudgetExceeded, match="exceeds the budget"):
        materialize(defs, instance, [rows.key, workload.submit_key], DAY, {"batch_gateway": resource})
    stats = emu.stats()
    assert sum(stats["batches_created"].values()) == 0
    assert stats["files"] == 0


def test_missing_column_is_named_before_any_call(emu, instance, resource):
    """A missing input column fails with a message naming it and listing what exists."""
    workload, rows = _tiny_workload("nocolumn", required_columns=("body",))
    wdefs = batch_workload(workload)
    defs = dg.Definitions(assets=[rows, *wdefs.assets], sensors=[wdefs.sensor], resources={"batch_gateway": resource})
    with pytest.raises(InvalidPartitionInput, match="lacks column\\(s\\) body; it has id, text"):
        materialize(defs, instance, [rows.key, workload.submit_key], DAY, {"batch_gateway": resource})
    assert sum(emu.stats()["batches_created"].values()) == 0


def test_nan_text_and_invalid_utf8_are_refused_before_any_call(emu, instance, resource):
    """Rows whose text is NaN, or a lone surrogate, fail the submit asset naming the rows; no batch is created."""
    daily = classification.daily

    @dg.asset(name="dirty_rows", partitions_def=daily)
    def dirty_rows() -> pd.DataFrame:
        return pd.DataFrame({"id": ["r0", "r1", "r2"], "text": ["billing", float("nan"), "bad \ud800"]}, dtype=object)

    workload, _ = _tiny_workload("dirty", upstream=dirty_rows)
    wdefs = batch_workload(workload)
    defs = dg.Definitions(
        assets=[dirty_rows, *wdefs.assets], sensors=[wdefs.sensor], resources={"batch_gateway": resource}
    )
    with pytest.raises(InvalidPartitionInput, match="column 'text' is empty, None or NaN in 1 row\\(s\\) \\(ids r1\\)"):
        materialize(defs, instance, [dirty_rows.key, workload.submit_key], DAY, {"batch_gateway": resource})
    assert sum(emu.stats()["batches_created"].values()) == 0


def test_low_success_rate_blocks_downstream(emu, instance, tmp_path):
    """A partition under its success-rate threshold fails the blocking check and its downstream does not run."""
    emu.set_profile({"seed": 3, "item_error_rate": 0.5, "item_error_kinds": {"invalid_request_400": 1}})
    resource = make_resource(emu, tmp_path / "strict", max_attempts=1)
    workload, rows = _tiny_workload("strict", min_success_rate=0.99, downstream=(dg.AssetKey("strict_downstream"),))
    wdefs = batch_workload(workload)

    @dg.asset(name="strict_downstream", partitions_def=classification.daily, deps=[workload.results_key])
    def downstream() -> None:
        return None

    defs = dg.Definitions(
        assets=[rows, downstream, *wdefs.assets],
        asset_checks=list(wdefs.checks),
        sensors=[wdefs.sensor],
        resources={"batch_gateway": resource},
    )
    assert materialize(defs, instance, [rows.key, workload.submit_key], DAY, {"batch_gateway": resource}).success
    runs, _ = _drive_to_results(defs, instance, resource, emu, wdefs, DAY)
    (evaluation,) = [
        e for r in runs for e in r.get_asset_check_evaluations() if e.check_name == "success_rate_at_least"
    ]
    assert not evaluation.passed
    assert latest_metadata(instance, dg.AssetKey("strict_downstream"), DAY) is None
    # Why items failed, without opening the Parquet file: a table by reason, the top ones in the summary.
    meta = latest_metadata(instance, workload.results_key, DAY)
    failed = meta[keys.ITEMS_TOTAL] - meta[keys.outcome_count("succeeded")]
    by_reason = [r.data for r in meta[keys.FAILURES_BY_REASON].records]
    assert failed > 0 and sum(r["items"] for r in by_reason) == failed
    assert [r["items"] for r in by_reason] == sorted((r["items"] for r in by_reason), reverse=True)
    summary = meta[keys.SUMMARY]
    assert summary.startswith(f"**{meta[keys.ITEMS_TOTAL]} items · ") and "% succeeded · cost $" in summary
    assert "Top failure reasons:" in summary and f"| {by_reason[0]['status']} | " in summary
    # The run failure itself says why: the value against the limit, not only the check's name.
    failures = [e.step_failure_data.error.message for r in runs for e in r.get_step_failure_events()]
    assert any(
        re.search(r"success_rate_at_least failed for partition: success rate \d+\.\d\d% vs minimum 99\.00%", m)
        for m in failures
    ), failures


def test_cost_over_budget_fails_the_cost_check(emu, instance, tmp_path):
    """Actual cost above the budget (the estimate was under it) fails the blocking cost check."""
    from batch_pipelines.core.pricing import PriceBook
    from batch_pipelines.services.estimate import estimate_requests

    resource = make_resource(emu, tmp_path / "costly")

    def report_request(row):  # a report prompt: the emulator answers with several lines
        return {
            "messages": [
                {"role": "user", "content": f"Write a short report about: {row['text']}. The team shipped it."}
            ]
        }

    # The estimate assumes 1 output token; the reports are longer, so the real cost is higher.
    workload, rows = _tiny_workload(
        "costly", build_request=report_request, expected_output_tokens=1, parse_response=lambda r: {}
    )
    estimate = estimate_requests(
        workload.requests_from_frame(rows(), partition=DAY), PriceBook.default(), expected_output=1
    )
    workload, rows = _tiny_workload(
        "costly",
        build_request=report_request,
        expected_output_tokens=1,
        parse_response=lambda r: {},
        budget_usd=estimate.cost_usd * Decimal("1.0001"),
    )
    wdefs = batch_workload(workload)
    defs = dg.Definitions(
        assets=[rows, *wdefs.assets],
        asset_checks=list(wdefs.checks),
        sensors=[wdefs.sensor],
        resources={"batch_gateway": resource},
    )
    assert materialize(defs, instance, [rows.key, workload.submit_key], DAY, {"batch_gateway": resource}).success
    runs, _ = _drive_to_results(defs, instance, resource, emu, wdefs, DAY)
    (evaluation,) = [e for r in runs for e in r.get_asset_check_evaluations() if e.check_name == "cost_within_budget"]
    assert not evaluation.passed
    assert "vs budget" in evaluation.description
    failures = [e.step_failure_data.error.message for r in runs for e in r.get_step_failure_events()]
    assert any("cost_within_budget failed for partition: cost $" in m and "vs budget $" in m for m in failures)


def test_results_run_that_dies_mid_retry_is_requested_again(emu, instance, tmp_path, monkeypatch):
    """A results run killed between marking retries and resending them leaves items on no batch; the sensor asks
    again."""
    emu.set_profile({"seed": 5, "item_error_rate": 0.3, "item_error_kinds": {"server_error_500": 1}})
    resource = make_resource(emu, tmp_path / "strand")
    workload, rows = _tiny_workload("strand")
    wdefs = batch_workload(workload)
    defs = dg.Definitions(
        assets=[rows, *wdefs.assets],
        asset_checks=list(wdefs.checks),
        sensors=[wdefs.sensor],
        resources={"batch_gateway": resource},
    )
    assert materialize(defs, instance, [rows.key, workload.submit_key], DAY, {"batch_gateway": resource}).success
    emu.advance(3600)
    (request,) = tick(defs, wdefs.sensor, instance).run_requests

    calls = {"n": 0}
    real = BatchWorkload.requests_from_frame

    def dies_on_the_retry(self, frame, *, partition, now=None):
        calls["n"] += 1
        raise RuntimeError("worker killed")  # the results run rebuilds requests only to resend retries

    monkeypatch.setattr(BatchWorkload, "requests_from_frame", dies_on_the_retry)
    died = run_requests_of(defs, instance, request, {"batch_gateway": resource})
    assert not died.success and calls["n"] == 1
    assert latest_metadata(instance, workload.results_key, DAY) is None

    monkeypatch.setattr(BatchWorkload, "requests_from_frame", real)
    (again,) = tick(defs, wdefs.sensor, instance).run_requests
    assert again.run_key != request.run_key and again.partition_key == DAY
    assert run_requests_of(defs, instance, again, {"batch_gateway": resource}).success
    meta = latest_metadata(instance, workload.results_key, DAY)
    assert meta[keys.ITEMS_TOTAL] == 20 and meta[keys.outcome_count("succeeded")] == 20
    assert meta[keys.RETRIED_ITEMS] > 0


def test_gemini_embeddings_land_in_the_same_vector_column(emu, instance, resource):
    """The embedding backfill on gemini-embedding-001 (Gemini's asyncBatchEmbedContent) writes the same
    fixed-size float32 vector column as on OpenAI, unchanged workload code."""
    import dataclasses

    import pyarrow as pa
    import pyarrow.parquet as pq

    workload = dataclasses.replace(
        embedding_backfill.workload, name="gemini_embeddings", model="gemini-embedding-001", group_name="gemini"
    )
    wdefs = batch_workload(workload)
    defs = dg.Definitions(
        assets=[embedding_backfill.corpus_chunks, *wdefs.assets],
        asset_checks=list(wdefs.checks),
        sensors=[wdefs.sensor],
        resources={"batch_gateway": resource},
    )
    created = emu.stats()["batches_created"].get("gemini", 0)
    assert _submit(defs, instance, resource, workload, "shard-002", rows=20).success
    assert emu.stats()["batches_created"]["gemini"] == created + 1
    _drive_to_results(defs, instance, resource, emu, wdefs, "shard-002")
    meta = latest_metadata(instance, workload.results_key, "shard-002")
    assert meta[keys.outcome_count("succeeded")] == 20 and meta[keys.COST_USD] > 0
    table = pq.read_table(meta[keys.RESULTS_PATH])
    assert table.num_rows == 20
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), embedding_backfill.DIMENSIONS)
