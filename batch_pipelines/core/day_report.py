"""The reference day's figures from its per-call records: bill, optimum, savings, misses, losses. Pure.

Each ``CallRecord`` is one call as the day ended: when it arrived, its deadline, when its final
outcome was recorded, which lane served it, what it cost, and what its usage costs on each lane.
``summarise`` turns them, with the ledger's realised total and the run's counters, into
``DayFigures``; ``format_table`` and ``target_lines`` print them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from batch_pipelines.core.outcomes import OutcomeKind

TERMINAL = frozenset(kind.value for kind in OutcomeKind)
_ZERO = Decimal(0)
OPTIMUM_RATIO_TARGET = Decimal("1.02")
PAID_TWICE_SHARE_TARGET = Decimal("0.01")
WALL_SECONDS_TARGET = 600.0


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_id: str
    kind: str  # "interactive", "deferrable", or a workload's job name
    model: str
    enqueued_s: float  # seconds since the day began
    deadline_s: float | None
    answered_s: float | None  # when its final outcome was recorded; None if it has none
    status: str | None  # its outcome kind, or a non-terminal status, or None if it vanished
    lane: str | None  # the lane that served it: "sync" or "batch"
    cost: Decimal
    sync_cost: Decimal  # its usage at the sync price: what a team without batching pays
    batch_cost: Decimal
    oracle_lane: str

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def lateness_s(self) -> float | None:
        """Seconds past the deadline (negative when early); None without a deadline or an answer."""
        if self.deadline_s is None or self.answered_s is None:
            return None
        return self.answered_s - self.deadline_s

    @property
    def missed(self) -> bool:
        if self.deadline_s is None:
            return False
        return not self.terminal or self.answered_s is None or self.answered_s > self.deadline_s

    @property
    def oracle_cost(self) -> Decimal:
        return self.batch_cost if self.oracle_lane == "batch" else self.sync_cost


@dataclass(frozen=True, slots=True)
class RunCounters:
    """What the run counted besides the calls themselves."""

    promotions: int = 0
    retries: int = 0
    batches: int = 0
    paid_twice_usd: Decimal = _ZERO
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    wall_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class LaneLine:
    calls: int
    cost: Decimal
    sync_cost: Decimal


@dataclass(frozen=True, slots=True)
class DayFigures:
    calls: int
    realised_usd: Decimal
    all_sync_usd: Decimal
    optimum_usd: Decimal
    misses: int
    worst_lateness_s: float  # the latest answer past its deadline; 0 when none was late
    lost: int
    counters: RunCounters
    by_lane: dict[str, LaneLine] = field(default_factory=dict)

    @property
    def savings_usd(self) -> Decimal:
        return self.all_sync_usd - self.realised_usd

    @property
    def savings_pct(self) -> Decimal:
        return self.savings_usd / self.all_sync_usd * 100 if self.all_sync_usd else _ZERO

    @property
    def optimum_ratio(self) -> Decimal:
        return self.realised_usd / self.optimum_usd if self.optimum_usd else Decimal(1)

    @property
    def paid_twice_share(self) -> Decimal:
        return self.counters.paid_twice_usd / self.realised_usd if self.realised_usd else _ZERO


def lane_group(record: CallRecord) -> str:
    """The table row a call belongs to: who made it and which lane served it."""
    who = "interactive" if record.kind == "interactive" else "deferrable" if record.kind == "deferrable" else "workload"
    return f"{who}, {record.lane or 'none'} lane"


def summarise(records: Sequence[CallRecord], *, realised_usd: Decimal, counters: RunCounters) -> DayFigures:
    """The day's figures; ``realised_usd`` is the ledger's exact total (plus the interactive calls' costs)."""
    lateness = [r.lateness_s for r in records if r.missed and r.lateness_s is not None]
    by_lane: dict[str, LaneLine] = {}
    for record in records:
        group = lane_group(record)
        line = by_lane.get(group, LaneLine(0, _ZERO, _ZERO))
        by_lane[group] = LaneLine(line.calls + 1, line.cost + record.cost, line.sync_cost + record.sync_cost)
    return DayFigures(
        calls=len(records),
        realised_usd=realised_usd,
        all_sync_usd=sum((r.sync_cost for r in records), _ZERO),
        optimum_usd=sum((r.oracle_cost for r in records), _ZERO),
        misses=sum(r.missed for r in records),
        worst_lateness_s=max(lateness, default=0.0),
        lost=sum(not r.terminal for r in records),
        counters=counters,
        by_lane=dict(sorted(by_lane.items())),
    )


def format_table(figures: DayFigures) -> str:
    c = figures.counters
    rows = [
        ("calls", f"{figures.calls:,}"),
        ("realised bill (ledger)", f"${figures.realised_usd:,.6f}"),
        ("all-sync bill", f"${figures.all_sync_usd:,.6f}"),
        ("optimum (perfect foresight)", f"${figures.optimum_usd:,.6f}"),
        ("realised / optimum", f"{figures.optimum_ratio:.4f}x"),
        ("saved against all-sync", f"${figures.savings_usd:,.6f} ({figures.savings_pct:.1f}%)"),
        ("deadline misses", f"{figures.misses} (worst lateness {figures.worst_lateness_s:.0f} s)"),
        ("paid twice", f"${c.paid_twice_usd:,.6f} ({figures.paid_twice_share * 100:.3f}% of the bill)"),
        ("calls lost", f"{figures.lost}"),
        ("promotions / retries / batches", f"{c.promotions} / {c.retries} / {c.batches}"),
        ("client CPU / peak RSS / wall", f"{c.cpu_seconds:.1f} s / {c.peak_rss_mb:.0f} MB / {c.wall_seconds:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows) + 2
    lines = ["the reference day", "-" * 78]
    lines += [f"{name:<{width}}{value}" for name, value in rows]
    lines += ["", f"{'by lane':<32}{'calls':>9}{'bill':>18}{'all-sync bill':>18}"]
    for group, line in figures.by_lane.items():
        lines.append(f"{group:<32}{line.calls:>9,}{f'${line.cost:,.6f}':>18}{f'${line.sync_cost:,.6f}':>18}")
    return "\n".join(lines)


def target_lines(figures: DayFigures, *, wall_limit_s: float = WALL_SECONDS_TARGET) -> list[str]:
    """``TARGET economics_…: … met|missed`` for each of the reference day's promises."""

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    c = figures.counters
    ratio = figures.optimum_ratio
    return [
        f"TARGET economics_bill_vs_optimum: {ratio:.4f}x (<= {OPTIMUM_RATIO_TARGET}x) "
        f"{verdict(ratio <= OPTIMUM_RATIO_TARGET)}",
        f"TARGET economics_deadline_misses: {figures.misses} (== 0) {verdict(figures.misses == 0)}",
        f"TARGET economics_paid_twice: {figures.paid_twice_share * 100:.3f}% (<= 1%) "
        f"{verdict(figures.paid_twice_share <= PAID_TWICE_SHARE_TARGET)}",
        f"TARGET economics_calls_lost: {figures.lost} (== 0) {verdict(figures.lost == 0)}",
        f"TARGET economics_wall_time: {c.wall_seconds:.1f} s (< {wall_limit_s:.0f} s) "
        f"{verdict(c.wall_seconds < wall_limit_s)}",
    ]
