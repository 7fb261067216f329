"""The traffic audit: exact money, the router's lane rule per call, chains, bad rows with line numbers, every format."""

import csv
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipelines.core.advice import AdvicePolicy, Case, Verdict, shortest_batch_deadline, single_call_lane
from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.core.lanes import LanePolicy
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.usage import Usage
from batch_pipelines.services.audit import audit_log
from batch_pipelines.services.traffic_log import parse_mapping

BOOK = PriceBook.default()
T0 = datetime(2026, 11, 2, tzinfo=UTC)


def row(i: int, **fields) -> dict:
    base = {
        "time": (T0 + timedelta(minutes=7 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": "gpt-5.4",
        "input_tokens": 1_000 + i,
        "output_tokens": 100 + i % 50,
        "blocked": False,
        "tag": "jobs",
    }
    base.update(fields)
    return base


def write_jsonl(path: Path, rows: list, raw_lines: dict[int, bytes] | None = None) -> Path:
    """Rows as JSONL; raw_lines puts a literal line at a 1-based line number."""
    lines = [orjson.dumps(r) for r in rows]
    for number, raw in sorted((raw_lines or {}).items()):
        lines.insert(number - 1, raw)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def expected_cost(rows: list, lane_of=lambda r: Lane.SYNC) -> Decimal:
    return sum(
        (
            BOOK.cost(
                r["model"],
                Usage(r["input_tokens"], r.get("cached_input_tokens", 0), 0, r["output_tokens"]),
                lane_of(r),
            ).cost_usd
            for r in rows
        ),
        Decimal(0),
    )


def test_spend_and_saving_are_exact_sums_of_per_call_prices(tmp_path):
    """Spend equals the Decimal sum of every call's price; the saving is the movable calls' sync minus batch price."""
    rows = [row(i, blocked=i % 3 == 0, model=("gpt-5.4", "claude-sonnet-4.6")[i % 2]) for i in range(600)]
    report = audit_log(write_jsonl(tmp_path / "log.jsonl", rows), "jsonl", BOOK)
    assert report.rows_read == 600 and report.bad_rows == 0
    assert report.spend == expected_cost(rows)
    movable = [r for r in rows if not r["blocked"]]
    assert report.movable_spend == expected_cost(movable)
    assert report.saving == expected_cost(movable) - expected_cost(movable, lambda r: Lane.BATCH)
    assert report.movable_token_share == Decimal(sum(r["input_tokens"] + r["output_tokens"] for r in movable)) / sum(
        r["input_tokens"] + r["output_tokens"] for r in rows
    )
    assert sum(sum(band) for band in report.spend_by_hour.values()) == report.spend


def test_latency_budgets_are_judged_by_the_router_lane_rule(tmp_path):
    """A call is movable exactly when the router would send a call with that deadline to the batch lane."""
    policy = LanePolicy()
    edge = shortest_batch_deadline(policy).total_seconds()
    budgets = [60.0, edge - 1, edge, edge + 1, 3_600.0, 86_400.0]
    for budget in budgets:
        lane = single_call_lane(timedelta(seconds=budget), policy).lane
        rows = [row(i, latency_budget_s=budget) for i in range(3)]
        report = audit_log(write_jsonl(tmp_path / f"{budget}.jsonl", rows), "jsonl", BOOK)
        assert (report.movable_spend > 0) == (lane is Lane.BATCH), budget


def test_group_verdicts_and_reasons(tmp_path):
    """Blocked traffic is sync (latency-bound), tight budgets sync (tight deadline), small background not worth it."""
    rows = (
        [row(i, tag="chat", blocked=True) for i in range(100)]
        + [row(i, tag="alerts", latency_budget_s=300.0) for i in range(100)]
        + [row(i, tag="digest", latency_budget_s=86_400.0) for i in range(100)]
        + [row(i, tag="batch-already", lane="batch") for i in range(100)]
    )
    report = audit_log(write_jsonl(tmp_path / "log.jsonl", rows), "jsonl", BOOK)
    by_tag = {g.tag: g for g in report.groups}
    assert (by_tag["chat"].verdict, by_tag["chat"].case) == (Verdict.SYNC, Case.LATENCY_BOUND)
    assert (by_tag["alerts"].verdict, by_tag["alerts"].case) == (Verdict.SYNC, Case.TIGHT_DEADLINE)
    assert (by_tag["digest"].verdict, by_tag["digest"].case) == (Verdict.NOT_WORTH_IT, Case.LOW_VOLUME)
    assert (by_tag["batch-already"].verdict, by_tag["batch-already"].case) == (Verdict.BATCH, Case.ALREADY_BATCHED)
    assert {g.tag for g in report.nothing_saved()} == {"chat", "alerts", "digest"}
    # With a threshold of $0.01 a month the digest's background work is worth moving.
    cheap = audit_log(tmp_path / "log.jsonl", "jsonl", BOOK, policy=AdvicePolicy(min_monthly_saving=Decimal("0.01")))
    assert {g.tag: g.verdict for g in cheap.groups}["digest"] is Verdict.BATCH


def test_chains_move_only_the_steps_their_deadline_leaves_room_for(tmp_path):
    """Four chained steps due in 2 h: the first two may be batched, the last two stay on sync (chained)."""
    rows = [
        row(c * 4 + s, tag="agent", chain_id=f"c{c}", chain_step=s, latency_budget_s=7_200.0)
        for c in range(10)
        for s in range(1, 5)
    ]
    report = audit_log(write_jsonl(tmp_path / "log.jsonl", rows), "jsonl", BOOK)
    movable = [r for r in rows if r["chain_step"] <= 2]
    assert report.movable_spend == expected_cost(movable)
    tight = [
        row(c * 3 + s, tag="agent", chain_id=f"t{c}", chain_step=s, latency_budget_s=1_800.0)
        for c in range(5)
        for s in (1, 2, 3)
    ]
    none = audit_log(write_jsonl(tmp_path / "tight.jsonl", tight), "jsonl", BOOK)
    assert none.movable_spend == 0
    assert none.groups[0].case is Case.CHAINED


def test_bad_jsonl_rows_are_reported_with_line_numbers_and_the_rest_audited(tmp_path):
    """Malformed JSON, wrong types, negatives, unknown models and blank lines: each bad line named, none lost."""
    rows = [row(i) for i in range(2_000)]
    raw = {
        5: b"{not json",
        9: b"[1, 2]",
        12: b"",
        700: orjson.dumps(row(1, input_tokens="many")),
        701: orjson.dumps(row(1, output_tokens=-3)),
        1500: orjson.dumps(row(1, model="gpt-99")),
        1501: orjson.dumps(row(1, time="yesterday")),
        1502: orjson.dumps(row(1, blocked="perhaps")),
        1503: orjson.dumps(row(1, cached_input_tokens=5_000)),
        1504: orjson.dumps({k: v for k, v in row(1).items() if k != "blocked"}),
        1505: orjson.dumps(row(1, lane="flex")),
        1506: orjson.dumps(row(1, chain_id="c1")),
    }
    report = audit_log(write_jsonl(tmp_path / "log.jsonl", rows, raw), "jsonl", BOOK)
    problems = {bad.line: bad.problem for bad in report.bad_listed}
    assert sorted(problems) == sorted(n for n in raw if n != 12)
    assert problems[5].startswith("not valid JSON")
    assert problems[9] == "not a JSON object"
    assert problems[700] == "input_tokens is not a whole number"
    assert problems[701] == "output_tokens is negative"
    assert "gpt-99" in problems[1500] and "price book" in problems[1500]
    assert problems[1501].startswith("time is not")
    assert problems[1502] == "blocked is not true or false"
    assert problems[1503] == "cached_input_tokens exceed input_tokens"
    assert problems[1504] == "neither blocked nor latency_budget_s is set"
    assert problems[1505] == "lane is not sync or batch"
    assert problems[1506] == "chain_id without a chain_step"
    assert report.rows_read == 2_000 and report.bad_rows == 11
    assert report.spend == expected_cost(rows)


def test_csv_with_a_mapping_and_bad_rows(tmp_path):
    """A CSV export with its own column names: --map renames them; short rows and bad cells are reported by line."""
    path = tmp_path / "export.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["startTime", "model", "prompt_tokens", "completion_tokens", "is_user_facing", "service"])
        for i in range(300):
            writer.writerow([row(i)["time"], "gpt-5.4", 1_000, 100, "yes" if i % 2 else "no", "api"])
        writer.writerow(["2026-11-02T00:00:00Z", "gpt-5.4", "ten", 100, "no", "api"])  # line 302
        handle.write("2026-11-02T00:00:00Z,gpt-5.4\n")  # line 303
    mapping = parse_mapping(
        {
            "startTime": "time",
            "prompt_tokens": "input_tokens",
            "completion_tokens": "output_tokens",
            "is_user_facing": "blocked",
            "service": "tag",
        }
    )
    report = audit_log(path, "csv", BOOK, mapping=mapping)
    assert report.rows_read == 300
    assert [(b.line, b.problem) for b in report.bad_listed] == [
        (302, "input_tokens is not a whole number"),
        (303, "2 columns where the header has 6"),
    ]
    assert [g.tag for g in report.groups] == ["api"]
    assert report.movable_spend == expected_cost(
        [{"model": "gpt-5.4", "input_tokens": 1_000, "output_tokens": 100}] * 150
    )


def test_parquet_log_with_typed_columns(tmp_path):
    """A Parquet log with timestamp and integer columns is audited like the JSONL one; rows numbered from 1."""
    rows = [row(i, blocked=i % 2 == 0) for i in range(100)]
    table = pa.Table.from_pylist(rows)
    table = table.set_column(
        0, "time", pa.array([T0 + timedelta(minutes=i) for i in range(100)], pa.timestamp("us", tz="UTC"))
    )
    table = table.set_column(
        2, "input_tokens", pa.array([r["input_tokens"] if i != 41 else -1 for i, r in enumerate(rows)])
    )
    pq.write_table(table, tmp_path / "log.parquet")
    report = audit_log(tmp_path / "log.parquet", "parquet", BOOK)
    assert [(b.line, b.problem) for b in report.bad_listed] == [(42, "input_tokens is negative")]
    assert report.spend == expected_cost([r for i, r in enumerate(rows) if i != 41])


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"time":"2026-11-02T00:00:00Z","input_tokens":1,"output_tokens":1,"blocked":true}\n', "model"),
        (b'{"time":"2026-11-02T00:00:00Z","model":"gpt-5.4","input_tokens":1,"output_tokens":1}\n', "blocked flag"),
        (b"", "empty"),
    ],
)
def test_a_log_missing_a_required_field_is_refused_naming_it(tmp_path, content, words):
    """A log without a model, without a blocked flag or latency budget, or empty: a clear error, nothing audited."""
    path = tmp_path / "log.jsonl"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=words):
        audit_log(path, "jsonl", BOOK)


def test_a_mapping_to_an_unknown_field_is_refused():
    """--map onto a field we do not know names the field and lists the known ones."""
    with pytest.raises(InvalidInputError, match="'tokens' is not a field"):
        parse_mapping({"x": "tokens"})


def test_days_and_monthly_figures_follow_the_log_span(tmp_path):
    """A log spanning 3 days: the saving per day is a third of the total, the month thirty days of it."""
    rows = [row(0, latency_budget_s=86_400.0), row(1, time="2026-11-04T23:00:00Z", latency_budget_s=86_400.0)]
    report = audit_log(write_jsonl(tmp_path / "log.jsonl", rows), "jsonl", BOOK)
    assert report.days == 3
    assert report.saving_per_day == report.saving / 3
    assert report.saving_per_month == report.saving / 3 * 30
