"""Result lines -> outcomes: every expected id once, both vendors, both table engines."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pyarrow.parquet as pq
import pytest

from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.usage import Usage
from batch_pipelines.providers.results_parsing import ParseReport, iter_outcomes
from batch_pipelines.results.openai_bulk import write_openai_results_parquet
from batch_pipelines.results.parquet import OUTCOMES_SCHEMA, read_outcomes_table, write_outcomes_parquet


def ok_line(cid: str, content: str = "billing", prompt: int = 100, cached: int = 40, completion: int = 3) -> dict:
    return {
        "id": f"batch_req_{cid}",
        "custom_id": cid,
        "response": {
            "status_code": 200,
            "request_id": "req_1",
            "body": {
                "model": "gpt-5.4-mini-2026-01-01",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "prompt_tokens_details": {"cached_tokens": cached},
                    "completion_tokens_details": {"reasoning_tokens": 1},
                },
            },
        },
        "error": None,
    }


def failed_line(cid: str, status: int = 400) -> dict:
    body = {"error": {"message": "Invalid 'messages'", "type": "invalid_request_error", "code": "invalid_value"}}
    return {"id": "x", "custom_id": cid, "response": {"status_code": status, "body": body}, "error": None}


def expired_line(cid: str) -> dict:
    return {
        "id": "x",
        "custom_id": cid,
        "response": None,
        "error": {"code": "batch_expired", "message": "not run in time"},
    }


def write_jsonl(path, rows) -> object:
    path.write_bytes(b"".join(row if isinstance(row, bytes) else orjson.dumps(row) + b"\n" for row in rows))
    return path


def test_openai_lines_map_to_each_outcome_kind(tmp_path):
    """200 -> succeeded with usage, 4xx line -> failed with the vendor's message, batch_expired -> expired."""
    path = write_jsonl(
        tmp_path / "out.jsonl", [ok_line("a"), failed_line("b", 400), failed_line("c", 500), expired_line("d")]
    )
    got = {o.custom_id: o for o in iter_outcomes([path], ["a", "b", "c", "d"], protocol="openai", model="gpt-5.4-mini")}
    assert got["a"].kind is OutcomeKind.SUCCEEDED
    assert got["a"].usage == Usage(input_tokens=100, cached_input_tokens=40, output_tokens=3, reasoning_tokens=1)
    assert got["a"].response["choices"][0]["message"]["content"] == "billing"
    assert (got["b"].kind, got["b"].status_code, got["b"].reason, got["b"].error_code) == (
        OutcomeKind.FAILED,
        400,
        "Invalid 'messages'",
        "invalid_value",
    )
    assert got["b"].is_retryable is False and got["c"].is_retryable is True
    assert (got["d"].kind, got["d"].error_code) == (OutcomeKind.EXPIRED, "batch_expired")


def test_anthropic_results_map_to_each_outcome_kind(tmp_path):
    """Succeeded folds cache reads and writes into input tokens; errored, canceled and expired map across."""
    message = {
        "model": "claude-sonnet-4.6",
        "content": [{"type": "text", "text": "hi"}],
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 50,
            "cache_creation_input_tokens": 5,
            "output_tokens": 7,
        },
    }
    rows = [
        {"custom_id": "a", "result": {"type": "succeeded", "message": message}},
        {
            "custom_id": "b",
            "result": {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
            },
        },
        {"custom_id": "c", "result": {"type": "canceled"}},
        {"custom_id": "d", "result": {"type": "expired"}},
    ]
    path = write_jsonl(tmp_path / "results.jsonl", rows)
    got = {o.custom_id: o for o in iter_outcomes([path], "abcd", protocol="anthropic")}
    assert got["a"].usage == Usage(input_tokens=65, cached_input_tokens=50, cache_write_tokens=5, output_tokens=7)
    assert (got["b"].kind, got["b"].status_code, got["b"].reason) == (OutcomeKind.FAILED, 400, "bad")
    assert got["c"].kind is OutcomeKind.CANCELLED and got["d"].kind is OutcomeKind.EXPIRED


def test_duplicates_missing_malformed_and_unexpected_are_all_accounted_for(tmp_path):
    """Every expected id comes out exactly once; the report counts the odd lines."""
    output = write_jsonl(
        tmp_path / "out.jsonl",
        [ok_line("a"), b'{"custom_id": "b", "resp\n', ok_line("a", content="second"), ok_line("zz"), b"\n"],
    )
    errors = write_jsonl(tmp_path / "err.jsonl", [failed_line("a"), failed_line("c")])
    report = ParseReport()
    got = list(iter_outcomes([output, None, errors], ["a", "b", "c", "d"], protocol="openai", report=report))
    assert sorted(o.custom_id for o in got) == ["a", "b", "c", "d"]
    by_id = {o.custom_id: o for o in got}
    assert (
        by_id["a"].kind is OutcomeKind.SUCCEEDED
        and by_id["a"].response["choices"][0]["message"]["content"] == "billing"
    )
    assert by_id["b"].kind is OutcomeKind.MISSING and "malformed" in by_id["b"].reason
    assert by_id["c"].kind is OutcomeKind.FAILED and by_id["d"].kind is OutcomeKind.MISSING
    assert (report.malformed, report.duplicates, report.unexpected, report.missing) == (1, 2, 1, 2)
    assert report.malformed_examples == ["out.jsonl:2"] and report.unexpected_ids == ["zz"]


@pytest.mark.parametrize("malformed", [False, True])
@pytest.mark.parametrize("engine", ["pyarrow", "orjson"])
def test_both_table_engines_write_the_same_outcomes_table(tmp_path, engine, malformed):
    """The Arrow engine and the orjson engine give the same rows as the ItemOutcome path (a malformed block too)."""
    rows = [ok_line(f"id-{i}") if i % 4 else failed_line(f"id-{i}") for i in range(40)]
    rows[10] = expired_line("id-10")
    rows.append(ok_line("id-3"))  # a duplicate
    if malformed:
        rows.insert(5, b"not json at all\n")
    path = write_jsonl(tmp_path / "out.jsonl", rows)
    expected = [f"id-{i}" for i in range(42)]  # id-40 and id-41 are missing
    summary = write_openai_results_parquet(
        [path], expected, tmp_path / "t.parquet", model="gpt-5.4-mini", engine=engine
    )
    table = read_outcomes_table(tmp_path / "t.parquet").sort_by("custom_id")
    reference = tmp_path / "ref.parquet"
    write_outcomes_parquet(iter_outcomes([path], expected, protocol="openai", model="gpt-5.4-mini"), reference)
    assert table.schema == OUTCOMES_SCHEMA
    assert table.to_pylist() == read_outcomes_table(reference).sort_by("custom_id").to_pylist()
    assert summary.rows == 42
    assert summary.counts == {"succeeded": 29, "failed": 10, "expired": 1, "missing": 2}
    assert (summary.report.malformed, summary.report.duplicates, summary.report.missing) == (int(malformed), 1, 2)


def test_table_costs_are_exact_decimals_from_the_price_book(tmp_path):
    """Each row's cost equals PriceBook.cost on the batch lane, to the femto-dollar."""
    book = PriceBook.default()
    path = write_jsonl(
        tmp_path / "out.jsonl", [ok_line("a", prompt=1234, cached=1000, completion=77), failed_line("b")]
    )
    write_openai_results_parquet([path], ["a", "b"], tmp_path / "t.parquet", model="gpt-5.4-mini", price_book=book)
    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "t.parquet").to_pylist()}
    want = book.cost("gpt-5.4-mini", Usage(1234, 1000, 0, 77, 1), Lane.BATCH)
    assert rows["a"]["cost_usd"] == want.cost_usd.quantize(Decimal("1e-15"))
    assert rows["a"]["sync_equivalent_usd"] == want.sync_equivalent_usd.quantize(Decimal("1e-15"))
    assert rows["b"]["cost_usd"] == 0
