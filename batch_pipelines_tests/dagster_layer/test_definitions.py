"""Definitions load, and the factories validate their arguments when defined."""

from decimal import Decimal

import dagster as dg
import pandas as pd
import pytest

from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.dagster_layer.checks import cost_budget_check, success_rate_check
from batch_pipelines.dagster_layer.factory import batch_workload
from batch_pipelines.dagster_layer.workload import BatchWorkload, custom_id_for
from batch_pipelines.definitions import defs
from batch_pipelines.workloads import classification

DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01")


def test_definitions_load_with_every_workload():
    """The code location resolves: 4 workloads x (submit, results, sensor), the router, checks, schedule."""
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    for name in ("nightly_reports", "classification", "embedding_backfill", "evals"):
        assert {f"{name}_batch", f"{name}_results"} <= keys
        assert repo.get_sensor_def(f"{name}_completion_sensor")
    assert "daily_reports_digest" in keys
    assert "deferred_calls" in keys
    assert repo.get_sensor_def("deferred_flush_sensor") and repo.get_sensor_def("deferred_completion_sensor")
    assert repo.get_schedule_def("nightly_submit_schedule")
    check_names = {c.name for c in repo.asset_graph.asset_check_keys}
    assert {"success_rate_at_least", "cost_within_budget"} <= check_names


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.9"])
def test_success_rate_check_validates_threshold(bad):
    """A threshold outside [0, 1] or not a number is refused when the check is defined."""
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="min_success_rate"):
        success_rate_check(dg.AssetKey("x"), DAILY, bad)


@pytest.mark.parametrize("bad", [-1, "abc", float("inf")])
def test_cost_check_validates_budget(bad):
    """A negative, infinite or non-numeric budget is refused when the check is defined."""
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="budget_usd"):
        cost_budget_check(dg.AssetKey("x"), DAILY, bad)


def _workload(**overrides) -> BatchWorkload:
    fields = dict(
        name="w",
        upstream="rows",
        partitions_def=DAILY,
        model="gpt-5.4-mini",
        build_request=lambda row: {"messages": [{"role": "user", "content": row["text"]}]},
        parse_response=lambda r: {},
        required_columns=("text",),
    )
    fields.update(overrides)
    return BatchWorkload(**fields)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "Bad-Name"}, "snake_case"),
        ({"min_success_rate": 2}, "min_success_rate"),
        ({"budget_usd": Decimal(-1)}, "budget_usd"),
    ],
)
def test_workload_validates_when_defined(overrides, message):
    """Broken workload settings fail at definition time, naming the setting."""
    with pytest.raises(dg.DagsterInvalidDefinitionError, match=message):
        _workload(**overrides)


def test_requests_from_frame_names_each_problem():
    """Empty partitions, missing columns and duplicate ids are refused with what is wrong."""
    workload = _workload()
    with pytest.raises(InvalidInputError, match="has no rows"):
        workload.requests_from_frame(pd.DataFrame({"id": [], "text": []}), partition="p")
    with pytest.raises(InvalidInputError, match="lacks column\\(s\\) text"):
        workload.requests_from_frame(pd.DataFrame({"id": ["a"]}), partition="p")
    with pytest.raises(InvalidInputError, match="duplicate ids \\(a\\)"):
        workload.requests_from_frame(pd.DataFrame({"id": ["a", "a"], "text": ["x", "y"]}), partition="p")


@pytest.mark.parametrize("blank", [None, float("nan"), "", "   ", pd.NA])
def test_a_blank_required_value_is_refused_naming_its_rows(blank):
    """None, NaN, pd.NA or an empty string in a required column is refused before any spend, naming the ids."""
    workload = _workload()
    frame = pd.DataFrame({"id": ["a", "b", "c"], "text": ["fine", blank, "ok"]}, dtype=object)
    with pytest.raises(InvalidInputError, match="column 'text' is empty, None or NaN in 1 row\\(s\\) \\(ids b\\)"):
        workload.requests_from_frame(frame, partition="p")


def test_a_missing_id_is_refused_naming_the_row_label():
    """A None or NaN id would become the custom_id 'None' or 'nan': refused, naming the frame's row label."""
    workload = _workload()
    frame = pd.DataFrame({"id": ["a", None, float("nan")], "text": ["x", "y", "z"]}, index=[10, 11, 12])
    with pytest.raises(InvalidInputError, match="column 'id' is empty, None or NaN in 2 row\\(s\\) \\(rows 11, 12\\)"):
        workload.requests_from_frame(frame, partition="p")


def test_text_that_is_not_utf8_is_refused_naming_row_and_column():
    """A lone surrogate in a column the request carries is an InvalidInputError naming the id and column."""
    workload = _workload()
    frame = pd.DataFrame({"id": ["a", "b"], "text": ["fine", "broken \ud800 text"]}, dtype=object)
    with pytest.raises(InvalidInputError, match="column 'text' holds text that is not valid UTF-8 .* \\(ids b\\)"):
        workload.requests_from_frame(frame, partition="p")


def test_invalid_text_in_a_column_the_request_never_reads_is_left_alone():
    """A lone surrogate in a column build_request does not use does not stop the partition."""
    workload = _workload()
    frame = pd.DataFrame({"id": ["a"], "text": ["fine"], "notes": ["\udfff"]}, dtype=object)
    assert len(workload.requests_from_frame(frame, partition="p")) == 1


def test_requests_carry_model_deadline_and_safe_ids():
    """Each row becomes a request with the model in its body, a deadline, and a provider-safe id."""
    workload = _workload()
    (request,) = workload.requests_from_frame(pd.DataFrame({"id": ["order 42/7"], "text": ["hi"]}), partition="p")
    assert request.body["model"] == "gpt-5.4-mini"
    assert request.deadline is not None and request.deadline.tzinfo is not None
    assert request.custom_id.startswith("order_42_7-") and len(request.custom_id) <= 64


def test_custom_ids_stay_distinct_after_sanitising():
    """Ids that differ only in unsafe characters still map to different custom_ids."""
    assert custom_id_for("a b") != custom_id_for("a_b") != custom_id_for("a/b")
    assert custom_id_for("plain-id_1") == "plain-id_1"


def test_classification_system_prompt_is_cacheable():
    """The classification prompt's stable prefix is longer than the 1,024 tokens caches need."""
    from batch_pipelines.core.tokens import count_text

    assert count_text(classification.SYSTEM) > 1100


def test_the_submit_asset_retries_transient_provider_failures_only():
    """The submit asset carries the workload's Dagster retry policy; a 5xx or lost answer may be retried,
    a 400-class refusal, bad input or a budget breach never is."""
    from batch_pipelines.core.errors import BudgetExceededError, ProviderError
    from batch_pipelines.dagster_layer.errors import failure_for
    from batch_pipelines.dagster_layer.factory import batch_workload
    from batch_pipelines.dagster_layer.workload import DEFAULT_SUBMIT_RETRY_POLICY

    wdefs = batch_workload(_workload())
    assert wdefs.submit_asset.op.retry_policy == DEFAULT_SUBMIT_RETRY_POLICY
    assert DEFAULT_SUBMIT_RETRY_POLICY.max_retries >= 1
    assert batch_workload(_workload(submit_retry_policy=None)).submit_asset.op.retry_policy is None
    assert failure_for(ProviderError("create failed", status_code=503)).allow_retries is True
    assert failure_for(ProviderError("no answer", status_code=None)).allow_retries is True
    assert failure_for(ProviderError("bad request", status_code=400)).allow_retries is False
    assert failure_for(InvalidInputError("bad rows")).allow_retries is False
    assert failure_for(BudgetExceededError("over")).allow_retries is False


def test_a_request_stream_validates_at_once_and_builds_the_requests_on_every_pass():
    """request_stream refuses bad rows before any pass; each pass yields every row's request again, in blocks."""
    workload = _workload()
    with pytest.raises(InvalidInputError, match="duplicate ids"):
        workload.request_stream(pd.DataFrame({"id": ["a", "a"], "text": ["x", "y"]}), partition="p")
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(25)], "text": [f"text {i}" for i in range(25)]})
    stream = workload.request_stream(frame, partition="p", rows_per_block=7)  # several blocks, one short
    first, second = list(stream), list(stream)
    assert len(stream) == 25
    assert [r.custom_id for r in first] == [f"r{i}" for i in range(25)]
    assert [r.body for r in second] == [r.body for r in first]
    assert first[24].body["model"] == workload.model
    assert [r.body for r in workload.requests_from_frame(frame, partition="p")] == [r.body for r in first]


def _repo_of(wdefs) -> dg.RepositoryDefinition:
    # The assets only, to read their definitions; nothing runs, so the resource is a placeholder.
    resources = {"batch_gateway": dg.ResourceDefinition.none_resource()}
    rows = dg.AssetSpec("rows", partitions_def=DAILY)
    return dg.Definitions(assets=[rows, *wdefs.assets], resources=resources).get_repository_def()


def _asset_node(repo: dg.RepositoryDefinition, name: str):
    return repo.asset_graph.get(dg.AssetKey(name))


def test_workload_assets_carry_provider_kind_owners_tags_and_description():
    """Kinds come from the model's vendor; owners, tags and the workload's description reach both assets."""
    workload = BatchWorkload(
        name="tagged",
        upstream="rows",
        partitions_def=DAILY,
        model="claude-sonnet-4.6",
        build_request=lambda row: {"messages": [{"role": "user", "content": row["text"]}]},
        parse_response=lambda response: {},
        description="Tickets labelled for the support dashboard.",
        owners=("team:support",),
        tags={"domain": "support"},
    )
    wdefs = batch_workload(workload)
    repo = _repo_of(wdefs)
    for key, kind in ((workload.submit_key, "batch"), (workload.results_key, "parquet")):
        node = _asset_node(repo, key.to_user_string())
        assert node.kinds == {"anthropic", kind}
        assert node.owners == ["team:support"]
        assert node.tags.get("domain") == "support"
        assert node.description.startswith("Tickets labelled for the support dashboard.")


def test_code_version_changes_with_the_prompt_and_the_model():
    """The derived code_version moves when the prompt code or the model changes, and not otherwise."""

    def prompt_a(row):
        return {"messages": [{"role": "user", "content": f"Label: {row['text']}"}]}

    def prompt_b(row):
        return {"messages": [{"role": "user", "content": f"Classify strictly: {row['text']}"}]}

    def make(build_request, model="gpt-5.4-mini"):
        return BatchWorkload(
            name="versioned",
            upstream="rows",
            partitions_def=DAILY,
            model=model,
            build_request=build_request,
            parse_response=lambda response: {},
        )

    assert make(prompt_a).resolved_code_version == make(prompt_a).resolved_code_version
    assert make(prompt_a).resolved_code_version != make(prompt_b).resolved_code_version
    assert make(prompt_a).resolved_code_version != make(prompt_a, "gpt-5.4").resolved_code_version
    wdefs = batch_workload(make(prompt_a))
    repo = _repo_of(wdefs)
    assert _asset_node(repo, "versioned_results").code_version == make(prompt_a).resolved_code_version
    assert make(prompt_a, "gemini-3-flash").provider_kind == "gemini"
