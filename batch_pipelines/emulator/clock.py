"""The virtual clock: virtual seconds advance at ``time_scale`` per real second, plus jumps.

Time scale 0 freezes the clock between explicit ``advance`` calls, which is what tests want:
a batch that takes "two minutes" finishes the moment the test moves the clock two minutes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class VirtualClock:
    def __init__(
        self,
        start: float,
        time_scale: float = 1.0,
        *,
        real_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_scale < 0:
            raise ValueError(f"time scale must be >= 0, got {time_scale}")
        self._real_clock = real_clock
        self._time_scale = time_scale
        self._lock = threading.Lock()
        self._anchor_virtual = start
        self._anchor_real = real_clock()

    @property
    def time_scale(self) -> float:
        return self._time_scale

    def now(self) -> float:
        with self._lock:
            return self._anchor_virtual + (self._real_clock() - self._anchor_real) * self._time_scale

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"the clock only moves forward; got {seconds} seconds")
        with self._lock:
            self._anchor_virtual += seconds
            return self._anchor_virtual + (self._real_clock() - self._anchor_real) * self._time_scale


def resume_virtual_time(saved_virtual: float, saved_wall: float, wall_now: float, time_scale: float) -> float:
    """Where a restarted clock resumes: downtime counts at the same scale as uptime.

    At scale 1 this keeps the virtual clock a fixed offset from real time across restarts; at
    scale 0 (tests) the clock resumes exactly where it stopped.
    """
    return saved_virtual + max(0.0, wall_now - saved_wall) * time_scale
