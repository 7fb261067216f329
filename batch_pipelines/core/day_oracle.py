"""The perfect-foresight optimum for a simulated day: the cheapest bill with no deadline missed. Pure.

The oracle knows each batch's actual turnaround. It puts every interactive call on the sync lane
(a caller is waiting), and every deferrable call on the batch lane exactly when a batch submitted
the moment the call arrived would have ended by its deadline (a call with no deadline always);
otherwise on the sync lane. It never waits for a flush, never retries beyond what the faults
force (a failed answer costs nothing on either lane), and never pays twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from batch_pipelines.core.requests import Lane

INTERACTIVE = "interactive"


@dataclass(frozen=True, slots=True)
class OracleCall:
    """What the oracle needs of one call: times in seconds since the day began, its price on each lane."""

    kind: str  # "interactive", "deferrable", or a workload's job name
    enqueued_s: float
    deadline_s: float | None
    # How long the batch this call would join actually took; None when it would not end (it expired).
    turnaround_s: float | None
    sync_cost: Decimal
    batch_cost: Decimal


def oracle_lane(call: OracleCall) -> Lane:
    if call.kind == INTERACTIVE:
        return Lane.SYNC
    if call.deadline_s is None:
        return Lane.BATCH
    if call.turnaround_s is not None and call.enqueued_s + call.turnaround_s <= call.deadline_s:
        return Lane.BATCH
    return Lane.SYNC


def oracle_cost(call: OracleCall) -> Decimal:
    return call.batch_cost if oracle_lane(call) is Lane.BATCH else call.sync_cost


def optimum(calls: Iterable[OracleCall]) -> Decimal:
    """The day's bill under perfect foresight."""
    return sum((oracle_cost(c) for c in calls), Decimal(0))
