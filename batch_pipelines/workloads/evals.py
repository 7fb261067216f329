"""Evals: model answers + references -> an LLM judge's score and rationale per case.

Offline by nature. Aggregate metrics (mean score, pass rate) join the results' metadata.
"""

import json
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
PASS_SCORE = 4
JUDGE = (
    "You are a strict judge. Compare the answer with the reference and score it from 1 (wrong) "
    'to 5 (fully correct). Reply with JSON only: {"score": <1-5>, "rationale": "<one line>"}.'
)


@dg.asset(partitions_def=daily, group_name="evals", kinds={"pandas"})
def eval_cases(context: dg.AssetExecutionContext, config: SyntheticInputConfig) -> pd.DataFrame:
    """The day's eval cases: question, the model's answer, the reference (synthetic, seeded)."""
    return synthetic.eval_cases(context.partition_key, rows=config.rows, seed=config.seed)


def _request(row: Mapping[str, Any]) -> dict[str, Any]:
    prompt = f"Question: {row['question']}\nAnswer: {row['answer']}\nReference: {row['reference']}"
    return {
        "max_completion_tokens": 80,
        "messages": [{"role": "system", "content": JUDGE}, {"role": "user", "content": prompt}],
    }


def _parse(response: dict[str, Any]) -> dict[str, Any]:
    try:
        verdict = json.loads(chat_text(response))
        score = int(verdict["score"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidOutput(f"judge reply is not the JSON asked for: {exc}") from None
    if not 1 <= score <= 5:
        raise InvalidOutput(f"score {score} outside 1-5")
    return {"score": score, "rationale": str(verdict.get("rationale", ""))}


def _summarize(table: pd.DataFrame) -> dict[str, Any]:
    scored = table[table["status"] == "succeeded"]
    if scored.empty or "score" not in scored:
        return {"eval_cases_scored": 0}
    return {
        "eval_cases_scored": int(len(scored)),
        "eval_mean_score": float(scored["score"].mean()),
        "eval_pass_rate": float((scored["score"] >= PASS_SCORE).mean()),
    }


workload = BatchWorkload(
    name="evals",
    upstream=eval_cases,
    partitions_def=daily,
    model="gemini-3-flash",
    build_request=_request,
    parse_response=_parse,
    id_column="case_id",
    required_columns=("question", "answer", "reference"),
    budget_usd=Decimal("0.50"),
    min_success_rate=0.9,
    expected_output_tokens=60,
    summarize=_summarize,
    group_name="evals",
)
defs = batch_workload(workload)
