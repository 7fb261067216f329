"""Ledger throughput on SQLite against a hand-written sqlite3.executemany baseline.

    python -m bench.ledger [--items N] [--quick] [--chunk-size C]

Both sides do the same three phases over the same rows, into the same tables (the baseline's
file is created by the Ledger's own DDL, then written with plain sqlite3 and the same pragmas):

  record    N pending items (INSERT ... ON CONFLICT DO NOTHING)
  assign    N items -> submitted under one batch key, one attempt row each
  outcomes  N outcomes: close each attempt (usage, cost), move each item, accumulate its cost

The baseline is the obvious per-row code: one executemany of per-row INSERT/UPDATE statements
per chunk, one transaction per chunk. It skips the ledger's guards (compare-and-set checks on
replays, per-chunk temp tables), so the target is half its speed: ledger >= 0.5x baseline.

Then the read the results path makes, over the same N items: every item's custom_id and
batch_key, through ``iter_items`` (one ItemRow per item through SQLAlchemy's result processing;
the current path) against ``read_item_columns`` (raw cursor, Arrow blocks of 65,536 rows), in
the same run, best of two each. Target: the set-wise read at least 5x the current path.
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.core.usage import Usage
from batch_pipelines.ledger import Ledger
from batch_pipelines.ledger.schema import money_to_sqlite

JOB, PARTITION, PROVIDER, MODEL, BATCH_KEY = "bench", "2025-01-01", "openai", "gpt-4o-mini", "shard-0"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Classify this ticket."}]}
DEADLINE = datetime(2030, 1, 1, tzinfo=UTC)
USAGE = Usage(input_tokens=1200, cached_input_tokens=1024, output_tokens=40)
COST = (Decimal("0.000045615"), Decimal("0.00009123"))
TARGET_RATIO = 0.5
READ_TARGET_RATIO = 5.0
READ_COLUMNS = ["custom_id", "batch_key"]


def custom_id(i: int) -> str:
    return f"item-{i:08d}"


def requests(n: int) -> Iterator[LLMRequest]:
    for i in range(n):
        yield LLMRequest(
            custom_id(i), Endpoint.CHAT, MODEL, BODY, deadline=DEADLINE, metadata={"estimated_input_tokens": 1200}
        )


def custom_ids(n: int) -> Iterator[str]:
    return (custom_id(i) for i in range(n))


def outcomes(n: int) -> Iterator[ItemOutcome]:
    # One in fifty fails, as a provider's per-line 500 would.
    for i in range(n):
        if i % 50 == 0:
            yield ItemOutcome(
                custom_id(i), OutcomeKind.FAILED, reason="server_error", status_code=500, error_code="server_error"
            )
        else:
            yield ItemOutcome(custom_id(i), OutcomeKind.SUCCEEDED, usage=USAGE)


class SameCost(Mapping[str, tuple[Decimal, Decimal]]):
    """custom_id -> (cost, sync-equivalent cost) without a million-entry dict in memory."""

    def __init__(self, n: int) -> None:
        self._n = n

    def __getitem__(self, key: str) -> tuple[Decimal, Decimal]:
        return COST

    def __iter__(self) -> Iterator[str]:
        return custom_ids(self._n)

    def __len__(self) -> int:
        return self._n


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ledger(path: Path, n: int, chunk_size: int) -> dict[str, float]:
    ledger = Ledger.for_path(path, chunk_size=chunk_size)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    assert ledger.record_items(JOB, PARTITION, requests(n), provider=PROVIDER) == n
    times["record"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert ledger.assign_items(JOB, PARTITION, custom_ids(n), batch_key=BATCH_KEY, lane=Lane.BATCH) == n
    times["assign"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert ledger.record_outcomes(JOB, PARTITION, BATCH_KEY, outcomes(n), SameCost(n)) == n
    times["outcomes"] = time.perf_counter() - t0
    totals = ledger.partition_totals(JOB, PARTITION)
    expected_failed = len(range(0, n, 50))
    assert totals.counts == {"succeeded": n - expected_failed, "failed": expected_failed}, totals.counts
    assert totals.cost_usd == COST[0] * n, totals.cost_usd
    ledger.close()
    return times


def run_reads(path: Path, n: int) -> tuple[float, float]:
    """Seconds for the current row-by-row read and for the set-wise read (best of two each)."""
    ledger = Ledger.for_path(path)
    row_times, block_times = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        final_key = {item.custom_id: item.batch_key for item in ledger.iter_items(JOB, PARTITION)}
        row_times.append(time.perf_counter() - t0)
        assert len(final_key) == n
        del final_key
        t0 = time.perf_counter()
        table = pa.Table.from_batches(ledger.read_item_columns(JOB, PARTITION, READ_COLUMNS))
        block_times.append(time.perf_counter() - t0)
        assert table.num_rows == n and table.column("batch_key")[n - 1].as_py() == BATCH_KEY
        del table
    ledger.close()
    return min(row_times), min(block_times)


def _sqlite_text(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def run_baseline(path: Path, n: int, chunk_size: int) -> dict[str, float]:
    Ledger.for_path(path).close()  # the same tables and indexes as the ledger's
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA cache_size=-65536")
    times: dict[str, float] = {}

    def chunked(rows: Iterator[Any]) -> Iterator[list[Any]]:
        chunk: list[Any] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def write(sql: str, rows: list[Any]) -> None:
        con.execute("BEGIN IMMEDIATE")
        con.executemany(sql, rows)
        con.execute("COMMIT")

    t0 = time.perf_counter()
    for chunk in chunked(requests(n)):
        now = _sqlite_text(datetime.now(UTC))
        rows = [
            (
                JOB,
                PARTITION,
                r.custom_id,
                PROVIDER,
                r.model,
                r.endpoint.value,
                r.lane.value,
                "pending",
                0,
                _sqlite_text(r.deadline) if r.deadline else None,
                r.metadata.get("estimated_input_tokens"),
                now,
                now,
            )
            for r in chunk
        ]
        write(
            "INSERT INTO bp_items (job, partition, custom_id, provider, model, endpoint, lane, status, attempts, "
            "deadline, estimated_input_tokens, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT DO NOTHING",
            rows,
        )
    times["record"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for chunk in chunked(custom_ids(n)):
        now = _sqlite_text(datetime.now(UTC))
        con.execute("BEGIN IMMEDIATE")
        con.executemany(
            "UPDATE bp_items SET status='submitted', batch_key=?, lane='batch', attempts=attempts+1, updated_at=? "
            "WHERE job=? AND partition=? AND custom_id=? AND status='pending'",
            [(BATCH_KEY, now, JOB, PARTITION, cid) for cid in chunk],
        )
        con.executemany(
            "INSERT INTO bp_attempts (job, partition, custom_id, batch_key, attempt, lane, model, opened_at) "
            "VALUES (?,?,?,?,1,'batch',?,?)",
            [(JOB, PARTITION, cid, BATCH_KEY, MODEL, now) for cid in chunk],
        )
        con.execute("COMMIT")
    times["assign"] = time.perf_counter() - t0

    costs = SameCost(n)
    t0 = time.perf_counter()
    for chunk in chunked(outcomes(n)):
        now = _sqlite_text(datetime.now(UTC))
        attempt_rows, item_rows = [], []
        for o in chunk:
            u = o.usage
            cost, sync = costs[o.custom_id]
            cost_i, sync_i = money_to_sqlite(cost), money_to_sqlite(sync)
            usage = (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens, u.reasoning_tokens)
            error = (o.reason, o.status_code, o.error_code)
            attempt_rows.append(
                (o.kind.value, *error, *usage, cost_i, sync_i, now, JOB, PARTITION, o.custom_id, BATCH_KEY)
            )
            item_rows.append(
                (o.kind.value, *error, *usage, cost_i, sync_i, now, JOB, PARTITION, o.custom_id, BATCH_KEY)
            )
        con.execute("BEGIN IMMEDIATE")
        con.executemany(
            "UPDATE bp_attempts SET outcome=?, reason=?, status_code=?, error_code=?, input_tokens=?, "
            "cached_input_tokens=?, cache_write_tokens=?, output_tokens=?, reasoning_tokens=?, cost_usd=?, "
            "sync_equivalent_usd=?, closed_at=? "
            "WHERE job=? AND partition=? AND custom_id=? AND batch_key=? AND outcome IS NULL",
            attempt_rows,
        )
        con.executemany(
            "UPDATE bp_items SET status=?, reason=?, status_code=?, error_code=?, input_tokens=input_tokens+?, "
            "cached_input_tokens=cached_input_tokens+?, cache_write_tokens=cache_write_tokens+?, "
            "output_tokens=output_tokens+?, reasoning_tokens=reasoning_tokens+?, cost_usd=cost_usd+?, "
            "sync_equivalent_usd=sync_equivalent_usd+?, updated_at=? "
            "WHERE job=? AND partition=? AND custom_id=? AND batch_key=? AND status='submitted'",
            item_rows,
        )
        con.execute("COMMIT")
    times["outcomes"] = time.perf_counter() - t0
    con.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="a 20,000-item smoke run")
    parser.add_argument("--chunk-size", type=int, default=50_000)
    args = parser.parse_args(argv)
    n = 20_000 if args.quick else args.items

    print(
        f"ledger bench: {n:,} items, chunk {args.chunk_size:,}, SQLite {sqlite3.sqlite_version}, Python "
        f"{sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        ledger_times = run_ledger(Path(tmp) / "ledger.sqlite", n, args.chunk_size)
        ledger_rss = peak_rss_mib()
        row_read, block_read = run_reads(Path(tmp) / "ledger.sqlite", n)
        baseline_times = run_baseline(Path(tmp) / "baseline.sqlite", n, args.chunk_size)
    baseline_rss = peak_rss_mib()

    print(f"{'phase':<10}{'ledger items/s':>16}{'baseline items/s':>18}{'ratio':>8}")
    for phase in ("record", "assign", "outcomes"):
        lr, br = n / ledger_times[phase], n / baseline_times[phase]
        print(f"{phase:<10}{lr:>16,.0f}{br:>18,.0f}{lr / br:>8.2f}")
    ledger_rate = n / sum(ledger_times.values())
    baseline_rate = n / sum(baseline_times.values())
    print(f"{'overall':<10}{ledger_rate:>16,.0f}{baseline_rate:>18,.0f}{ledger_rate / baseline_rate:>8.2f}")
    print(f"ledger wall {sum(ledger_times.values()):.1f}s, baseline wall {sum(baseline_times.values()):.1f}s")
    print(f"peak RSS: {ledger_rss:.0f} MiB after the ledger run, {baseline_rss:.0f} MiB after the baseline run")
    verdict = "met" if ledger_rate >= TARGET_RATIO * baseline_rate else "missed"
    print(f"TARGET ledger: {ledger_rate:.0f} vs {baseline_rate:.0f} {verdict}")
    read_ratio = row_read / block_read
    print(
        f"read {n:,} items' custom_id + batch_key: iter_items {n / row_read:,.0f} items/s ({row_read:.2f} s), "
        f"read_item_columns {n / block_read:,.0f} items/s ({block_read:.2f} s)"
    )
    read_verdict = "met" if read_ratio >= READ_TARGET_RATIO else "missed"
    print(f"TARGET ledger_read: {read_ratio:.2f}x vs {READ_TARGET_RATIO:.2f}x of iter_items {read_verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
