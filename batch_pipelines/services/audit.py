"""The traffic audit: a log of calls in, the money batch would save (and where it saves nothing) out.

Each call is put in one class with Arrow compute: already batched, blocked (a caller waits),
tight (its latency budget is shorter than the router would give a batch), chained (a chain step
the chain's deadline leaves no batch turnaround for), or movable (background work paid at the
sync price that the router would send to the batch lane). Token sums are grouped by tag, model,
class and hour of day block by block, so memory stays flat; only the sums are priced, exactly,
with the Decimal price book (price is linear in tokens, so the sum of the prices is the price of
the sums). The verdict per group is ``core.advice.judge_group``: the advisor's cases and words.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_pipelines.core.advice import (
    DAYS_PER_MONTH,
    AdvicePolicy,
    Case,
    GroupFigures,
    Verdict,
    batchable_chain_steps,
    judge_group,
    shortest_batch_deadline,
)
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.usage import Usage
from batch_pipelines.ledger import Ledger
from batch_pipelines.services.log_checks import BadRow, LogBlock
from batch_pipelines.services.traffic_log import ledger_log, read_log

BATCHED, BLOCKED, TIGHT, CHAINED, MOVABLE = "batched", "blocked", "tight", "chained", "movable"
CLASSES = (BATCHED, BLOCKED, TIGHT, CHAINED, MOVABLE)
# The hour chart's three bands: what must stay on sync, what could move, what already moved.
INTERACTIVE_CLASSES = (BLOCKED, TIGHT, CHAINED)
KEYS = ["tag", "model", "class", "hour"]
TOKEN_SUMS = ["calls", "input_tokens", "cached_input_tokens", "output_tokens"]
# Bad rows listed one by one in the report; all of them are counted, by problem.
MAX_LISTED_BAD_ROWS = 1_000
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class GroupReport:
    tag: str
    model: str
    calls: int
    spend: Decimal
    movable_spend: Decimal
    saving: Decimal  # over the log's days
    saving_per_month: Decimal
    verdict: Verdict
    case: Case
    reason: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    rows_read: int
    bad_rows: int
    bad_by_problem: dict[str, int]
    bad_listed: list[BadRow]  # the first MAX_LISTED_BAD_ROWS
    days: int
    first_call: datetime | None
    last_call: datetime | None
    spend: Decimal
    tokens: int
    movable_spend: Decimal
    movable_tokens: int
    saving: Decimal
    groups: list[GroupReport]
    spend_by_hour: dict[str, list[Decimal]]  # band -> 24 hourly sums (UTC)
    min_monthly_saving: Decimal

    @property
    def saving_per_day(self) -> Decimal:
        return self.saving / self.days

    @property
    def saving_per_month(self) -> Decimal:
        return self.saving_per_day * DAYS_PER_MONTH

    @property
    def movable_spend_share(self) -> Decimal:
        return self.movable_spend / self.spend if self.spend else _ZERO

    @property
    def movable_token_share(self) -> Decimal:
        return Decimal(self.movable_tokens) / self.tokens if self.tokens else _ZERO

    def nothing_saved(self) -> list[GroupReport]:
        """The groups where batch saves nothing (or not enough), each with its reason."""
        return [group for group in self.groups if group.verdict is not Verdict.BATCH]


@dataclass
class _Totals:
    partial: list[pa.Table] = field(default_factory=list)
    chain_rows: list[pa.Table] = field(default_factory=list)
    rows_read: int = 0
    bad_rows: int = 0
    bad_by_problem: dict[str, int] = field(default_factory=dict)
    bad_listed: list[BadRow] = field(default_factory=list)
    first: datetime | None = None
    last: datetime | None = None


def audit_log(
    path: Path,
    fmt: str,
    book: PriceBook,
    *,
    mapping: Mapping[str, str] | None = None,
    policy: AdvicePolicy = AdvicePolicy(),
) -> AuditReport:
    """Read, classify, group and price the log at ``path``."""
    return audit_blocks(read_log(path, fmt, mapping), book, policy=policy)


def audit_ledger(ledger: Ledger, book: PriceBook, *, policy: AdvicePolicy = AdvicePolicy()) -> AuditReport:
    """The audit of what the ledger recorded: each workload's attempts as its traffic."""
    return audit_blocks(ledger_log(ledger), book, policy=policy)


def audit_blocks(blocks: Iterable[LogBlock], book: PriceBook, *, policy: AdvicePolicy = AdvicePolicy()) -> AuditReport:
    tight_below = shortest_batch_deadline(policy.lane_policy, policy.turnaround).total_seconds()
    known_models = pa.array(book.models)
    totals = _Totals()
    for block in blocks:
        rows = _drop_unknown_models(block, known_models, totals)
        totals.rows_read += rows.num_rows
        if rows.num_rows == 0:
            continue
        _note_times(rows, totals)
        classes = _classify(rows, tight_below)
        is_chain = pc.and_(pc.equal(classes, "chain?"), pc.is_valid(rows.column("chain_id")))
        if pc.any(is_chain).as_py():
            totals.chain_rows.append(
                rows.filter(is_chain).select(
                    ["chain_id", "chain_step", "latency_budget_s", "tag", "model", "time", *TOKEN_SUMS[1:]]
                )
            )
            rows, classes = rows.filter(pc.invert(is_chain)), pc.filter(classes, pc.invert(is_chain))
        totals.partial.append(_group(rows, classes))
    if totals.chain_rows:
        totals.partial.append(_chains(pa.concat_tables(totals.chain_rows), policy))
    return _report(totals, book, policy)


def _drop_unknown_models(block: LogBlock, known: pa.Array, totals: _Totals) -> pa.Table:
    bad = list(block.bad)
    rows = block.rows
    unknown = pc.invert(pc.is_in(rows.column("model"), value_set=known))
    if pc.any(unknown).as_py():
        for line, model in zip(
            pc.filter(rows.column("line"), unknown).to_pylist(), pc.filter(rows.column("model"), unknown).to_pylist()
        ):
            bad.append(BadRow(line, f"model {model!r} is not in the price book (add it with --prices)"))
        rows = rows.filter(pc.invert(unknown))
    totals.bad_rows += len(bad)
    for row in sorted(bad, key=lambda r: r.line):
        totals.bad_by_problem[_problem_kind(row.problem)] = totals.bad_by_problem.get(_problem_kind(row.problem), 0) + 1
        if len(totals.bad_listed) < MAX_LISTED_BAD_ROWS:
            totals.bad_listed.append(row)
    return rows


def _problem_kind(problem: str) -> str:
    """The problem without its particulars, to count like with like ('not valid JSON (...)' -> 'not valid JSON')."""
    if problem.startswith("model "):
        return "model not in the price book"
    return problem.split(" (", 1)[0]


def _note_times(rows: pa.Table, totals: _Totals) -> None:
    bounds = pc.min_max(rows.column("time")).as_py()
    low, high = bounds["min"], bounds["max"]
    totals.first = low if totals.first is None else min(totals.first, low)
    totals.last = high if totals.last is None else max(totals.last, high)


def _classify(rows: pa.Table, tight_below: float) -> pa.Array:
    """One class per row; chain steps that may move are 'chain?' until their chain is seen whole."""
    batch = pc.equal(rows.column("lane"), "batch")
    blocked = rows.column("blocked")
    chain = pc.is_valid(rows.column("chain_id"))
    tight = pc.fill_null(pc.less_equal(rows.column("latency_budget_s"), tight_below), False)
    return pc.case_when(
        pc.make_struct(batch, blocked, chain, tight),
        BATCHED,
        BLOCKED,
        "chain?",
        TIGHT,
        MOVABLE,
    )


def _group(rows: pa.Table, classes: pa.Array | pa.ChunkedArray) -> pa.Table:
    table = pa.table(
        {
            "tag": rows.column("tag"),
            "model": rows.column("model"),
            "class": classes,
            "hour": pc.cast(pc.hour(rows.column("time")), pa.int64()),
            "calls": pa.array(np.ones(rows.num_rows, dtype=np.int64)),
            "input_tokens": rows.column("input_tokens"),
            "cached_input_tokens": rows.column("cached_input_tokens"),
            "output_tokens": rows.column("output_tokens"),
        }
    )
    return _sum_by_keys(table)


def _sum_by_keys(table: pa.Table) -> pa.Table:
    summed = table.group_by(KEYS).aggregate([(name, "sum") for name in TOKEN_SUMS])
    renamed = summed.rename_columns([name.removesuffix("_sum") for name in summed.column_names])
    return renamed.select([*KEYS, *TOKEN_SUMS])


def _chains(rows: pa.Table, policy: AdvicePolicy) -> pa.Table:
    """Chain steps classified once their whole chain is known: the first k of N steps move."""
    per_chain = rows.group_by("chain_id").aggregate([("chain_step", "count"), ("latency_budget_s", "min")])
    steps = per_chain.column("chain_step_count").to_pylist()
    budgets = per_chain.column("latency_budget_s_min").to_pylist()
    batchable = [
        batchable_chain_steps(n, None if budget is None else timedelta(seconds=budget), policy.lane_policy)
        for n, budget in zip(steps, budgets)
    ]
    limits = pa.table({"chain_id": per_chain.column("chain_id"), "batchable": pa.array(batchable, pa.int64())})
    joined = rows.join(limits, "chain_id")
    moves = pc.less_equal(joined.column("chain_step"), joined.column("batchable"))
    classes = pc.if_else(moves, MOVABLE, CHAINED)
    return _group(joined, classes)


def _report(totals: _Totals, book: PriceBook, policy: AdvicePolicy) -> AuditReport:
    days = 1
    if totals.first is not None and totals.last is not None:
        days = max(1, math.ceil((totals.last - totals.first) / timedelta(days=1)))
    grouped = _sum_by_keys(pa.concat_tables(totals.partial)) if totals.partial else None
    by_hour = {band: [_ZERO] * 24 for band in ("interactive", "movable", "batched")}
    groups: dict[tuple[str, str], dict[str, int | Decimal]] = {}
    spend = movable_spend = saving = _ZERO
    tokens = movable_tokens = 0
    for row in grouped.to_pylist() if grouped is not None else []:
        usage = Usage(
            input_tokens=row["input_tokens"],
            cached_input_tokens=row["cached_input_tokens"],
            output_tokens=row["output_tokens"],
        )
        klass = row["class"]
        lane = Lane.BATCH if klass == BATCHED else Lane.SYNC
        cost = book.cost(row["model"], usage, lane, policy.discounts)
        group = groups.setdefault((row["tag"], row["model"]), {name: 0 for name in (*CLASSES, "calls")})
        group["calls"] += row["calls"]
        group[klass] += row["calls"]
        group["spend"] = group.get("spend", _ZERO) + cost.cost_usd
        band = "batched" if klass == BATCHED else ("movable" if klass == MOVABLE else "interactive")
        by_hour[band][row["hour"]] += cost.cost_usd
        spend += cost.cost_usd
        tokens += usage.total_tokens
        if klass == MOVABLE:
            batch_cost = book.cost(row["model"], usage, Lane.BATCH, policy.discounts).cost_usd
            group["movable_spend"] = group.get("movable_spend", _ZERO) + cost.cost_usd
            group["saving"] = group.get("saving", _ZERO) + cost.cost_usd - batch_cost
            movable_spend += cost.cost_usd
            movable_tokens += usage.total_tokens
            saving += cost.cost_usd - batch_cost
    reports = [_group_report(tag, model, figures, days, policy) for (tag, model), figures in groups.items()]
    reports.sort(key=lambda g: (-g.saving, -g.spend, g.tag, g.model))
    return AuditReport(
        rows_read=totals.rows_read,
        bad_rows=totals.bad_rows,
        bad_by_problem=dict(sorted(totals.bad_by_problem.items(), key=lambda kv: -kv[1])),
        bad_listed=totals.bad_listed,
        days=days,
        first_call=totals.first,
        last_call=totals.last,
        spend=spend,
        tokens=tokens,
        movable_spend=movable_spend,
        movable_tokens=movable_tokens,
        saving=saving,
        groups=reports,
        spend_by_hour=by_hour,
        min_monthly_saving=policy.min_monthly_saving,
    )


def _group_report(
    tag: str, model: str, figures: Mapping[str, int | Decimal], days: int, policy: AdvicePolicy
) -> GroupReport:
    def count(name: str) -> int:
        return int(figures.get(name, 0))

    def dollars(name: str) -> Decimal:
        return Decimal(figures.get(name, _ZERO))

    judged = GroupFigures(
        calls=count("calls"),
        days=days,
        spend=dollars("spend"),
        movable_calls=count(MOVABLE),
        movable_spend=dollars("movable_spend"),
        movable_saving=dollars("saving"),
        batched_calls=count(BATCHED),
        blocked_calls=count(BLOCKED),
        tight_calls=count(TIGHT),
        chained_calls=count(CHAINED),
    )
    verdict, case, reason = judge_group(judged, policy)
    return GroupReport(
        tag=tag,
        model=model,
        calls=judged.calls,
        spend=judged.spend,
        movable_spend=judged.movable_spend,
        saving=judged.movable_saving,
        saving_per_month=judged.movable_saving / days * DAYS_PER_MONTH,
        verdict=verdict,
        case=case,
        reason=reason,
    )
