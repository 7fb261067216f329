"""The router's part of ``make demo``: a few hundred mixed calls, printed by lane with the bill against all-sync.

Interactive calls run on the sync lane at once; deferrable calls are buffered, flushed (``--all``,
since the demo cannot wait out the 15-minute age threshold) and collected as their batches end
on the emulator's fast clock; calls due too soon for a batch go to the sync lane at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from batch_pipelines.core.lanes import LanePolicy
from batch_pipelines.core.requests import Lane
from batch_pipelines.services.gateway_config import build_gateway
from batch_pipelines.services.router import CallResult, DeferredCall, Router

MAX_COLLECT_ROUNDS = 240
MODEL = "gpt-5.4-mini"
# (how many, lane, deadline): the mix an application sends in a few minutes.
MIX: tuple[tuple[int, str, timedelta | None], ...] = (
    (40, "interactive", None),
    (200, "deferrable", None),
    (40, "deferrable", timedelta(hours=3)),
    (20, "deferrable", timedelta(minutes=20)),
)


@dataclass
class LaneLine:
    calls: int = 0
    cost: Decimal = Decimal(0)
    sync_cost: Decimal = Decimal(0)


@dataclass
class RouterOutcome:
    by_lane: dict[str, LaneLine] = field(default_factory=dict)
    unfinished: int = 0
    failed: int = 0

    @property
    def ok(self) -> bool:
        return self.unfinished == 0 and bool(self.by_lane)


def ticket(i: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_completion_tokens": 8,
        "messages": [
            {"role": "system", "content": "Label the support ticket. Labels: billing, bug, account, other"},
            {"role": "user", "content": f"Ticket {i}: I was charged twice for order {1000 + i}."},
        ],
    }


def run_router_demo(emulator_url: str, work_dir: Path, *, echo: Callable[[str], None] = print) -> RouterOutcome:
    gateway = build_gateway(
        emulator_url=emulator_url,
        ledger_url=f"sqlite:///{work_dir / 'router-ledger.sqlite'}",
        results_dir=work_dir / "router-results",
        work_dir=work_dir / "router-work",
        policy=LanePolicy(),
    )
    outcome = RouterOutcome()
    with Router(gateway) as router:
        price = router.gateway.price_book
        interactive: list[CallResult] = []
        deferred: list[str] = []
        i = 0
        for count, lane, deadline in MIX:
            for _ in range(count):
                answer = router.call(ticket(i), lane="interactive" if lane == "interactive" else "deferrable",
                                     deadline=deadline)  # fmt: skip
                i += 1
                if isinstance(answer, CallResult):
                    interactive.append(answer)
                else:
                    deferred.append(answer.id)
        echo(f"[router] {i} calls: {len(interactive)} interactive, {len(deferred)} deferrable; flushing the buffer")
        flushed = router.flush(everything=True)
        lanes = flushed.by_lane()
        echo(f"[router] flushed {lanes[Lane.BATCH]} calls to the batch lane in {len(flushed.flushes)} flushes")
        handles: list[DeferredCall] = []
        for _ in range(MAX_COLLECT_ROUNDS):
            router.watch()
            router.collect()
            handles = router.get_many(deferred)
            if all(h.done for h in handles):
                break
            time.sleep(0.25)  # the emulator's clock runs fast; give the batches a moment
        for result in interactive:
            _add(outcome, "interactive (sync)", result.cost_usd, price.cost(MODEL, result.usage, Lane.SYNC).cost_usd)
        for handle in handles:
            if not handle.done or handle.usage is None or handle.cost_usd is None:
                outcome.unfinished += 1
                continue
            outcome.failed += handle.status != "succeeded"
            name = "deferrable, batch lane" if handle.lane is Lane.BATCH else "deferrable, sync lane (deadline)"
            _add(outcome, name, handle.cost_usd, price.cost(MODEL, handle.usage, Lane.SYNC).cost_usd)
    return outcome


def _add(outcome: RouterOutcome, lane: str, cost: Decimal, sync_cost: Decimal) -> None:
    line = outcome.by_lane.setdefault(lane, LaneLine())
    line.calls += 1
    line.cost += cost
    line.sync_cost += sync_cost


def format_router_outcome(outcome: RouterOutcome) -> str:
    lines = ["router (call-site lanes)", "-" * 72, f"{'lane':<34}{'calls':>7}{'bill':>15}{'all-sync bill':>16}"]
    for lane, line in outcome.by_lane.items():
        lines.append(f"{lane:<34}{line.calls:>7}{f'${line.cost:.6f}':>15}{f'${line.sync_cost:.6f}':>16}")
    cost = sum((line.cost for line in outcome.by_lane.values()), Decimal(0))
    sync = sum((line.sync_cost for line in outcome.by_lane.values()), Decimal(0))
    calls = sum(line.calls for line in outcome.by_lane.values())
    lines.append(f"{'total':<34}{calls:>7}{f'${cost:.6f}':>15}{f'${sync:.6f}':>16}")
    saved = sync - cost
    pct = saved / sync * 100 if sync else Decimal(0)
    lines.append(f"saved ${saved:.6f} ({pct:.1f}%) against all-sync; {outcome.failed} call(s) failed with a reason")
    if outcome.unfinished:
        lines.append(f"{outcome.unfinished} deferrable call(s) did not finish")
    return "\n".join(lines)
