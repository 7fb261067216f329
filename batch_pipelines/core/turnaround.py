"""What past batches say about how long a provider's model takes: a small value, computed without I/O.

The vendors promise a 24-hour window, but most batches end within an hour or two. The ledger
records when each batch was created and when it ended; this module turns those durations into
quantiles the lane rule and the flush decision can use. Too few batches say nothing reliable,
so below ``MIN_BATCHES_FOR_ESTIMATE`` there is no estimate at all and callers assume the whole
window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

# Twenty batches put the 90th percentile between the 18th and 19th longest: enough not to be
# fooled by one fast afternoon, few enough that a new model earns its estimate within a day.
MIN_BATCHES_FOR_ESTIMATE = 20


@dataclass(frozen=True, slots=True)
class TurnaroundEstimate:
    """Create-to-end durations of a provider/model's past batches, as quantiles."""

    batches_seen: int
    fastest: timedelta
    median: timedelta
    p90: timedelta
    slowest: timedelta

    def __post_init__(self) -> None:
        if self.batches_seen < 1:
            raise ValueError("a turnaround estimate needs at least one batch")
        if not (timedelta(0) <= self.fastest <= self.median <= self.p90 <= self.slowest):
            raise ValueError(
                "turnaround quantiles must be non-negative and ordered fastest <= median <= p90 <= slowest"
            )

    @classmethod
    def from_durations(
        cls, durations: Iterable[timedelta], *, min_batches: int = MIN_BATCHES_FOR_ESTIMATE
    ) -> TurnaroundEstimate | None:
        """The estimate of these durations, or None when fewer than ``min_batches`` were seen."""
        ordered = sorted(durations)
        if len(ordered) < max(1, min_batches):
            return None
        return cls(
            batches_seen=len(ordered),
            fastest=ordered[0],
            median=_quantile(ordered, 0.5),
            p90=_quantile(ordered, 0.9),
            slowest=ordered[-1],
        )


def _quantile(ordered: list[timedelta], q: float) -> timedelta:
    """Nearest-rank quantile: a duration that was actually observed, never an interpolation."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
