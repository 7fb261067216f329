"""Seeded randomness and the fault decisions built on it.

Every random choice is a pure function of the profile seed and a few identifying parts
(batch sequence number, line index, request fingerprint, attempt number), so a run replays
exactly. Counters that make "N failures then success" possible live in ``FaultState``.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections import defaultdict
from collections.abc import Mapping

import numpy as np

_SCALE = float(1 << 64)


def uniforms(*parts: object) -> tuple[float, float, float, float]:
    """Four independent uniform numbers in [0, 1) derived from ``parts``."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=32).digest()
    return (
        int.from_bytes(digest[0:8], "little") / _SCALE,
        int.from_bytes(digest[8:16], "little") / _SCALE,
        int.from_bytes(digest[16:24], "little") / _SCALE,
        int.from_bytes(digest[24:32], "little") / _SCALE,
    )


def chance(*parts: object) -> float:
    return uniforms(*parts)[0]


def stable_index(text: str, size: int) -> int:
    """An index in [0, size) that depends only on ``text`` (not on PYTHONHASHSEED)."""
    return zlib.crc32(text.encode()) % size


_MASK = (1 << 64) - 1


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class LineDraws:
    """Seeded per-line random numbers for one batch; cheaper than hashing a string per line.

    ``draw(index)`` gives three uniforms in [0, 1) and a 128-bit id stem for line ``index``.
    """

    def __init__(self, *parts: object) -> None:
        digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
        self._base = int.from_bytes(digest, "little")

    def draw(self, index: int) -> tuple[float, float, float, int]:
        # Three 21-bit uniforms from one 64-bit draw: ample resolution for fault rates.
        a = _splitmix(self._base + index)
        b = _splitmix(a)
        return (a >> 43) / _U21, ((a >> 22) & _M21) / _U21, ((a >> 1) & _M21) / _U21, (a << 64) | b

    def block(self, start: int, count: int) -> DrawBlock:
        """``draw(i)`` for ``i`` in ``[start, start + count)`` at once: bulk processing pays per
        block, not per line, for the 64-bit arithmetic.

        Unsigned 64-bit numpy arithmetic wraps exactly like ``_splitmix``'s masks, and the
        21-bit quotients are exact in float64, so every value equals ``draw``'s.
        """
        with np.errstate(over="ignore"):
            a = _splitmix_array(np.arange(count, dtype=np.uint64) + np.uint64((self._base + start) & _MASK))
            b = _splitmix_array(a)
        return DrawBlock(
            start,
            ((a >> np.uint64(43)).astype(np.float64) / _U21).tolist(),
            (((a >> np.uint64(22)) & np.uint64(_M21)).astype(np.float64) / _U21).tolist(),
            (((a >> np.uint64(1)) & np.uint64(_M21)).astype(np.float64) / _U21).tolist(),
            a.astype(">u8").tobytes().hex(),
            b.astype(">u8").tobytes().hex(),
        )


class DrawBlock:
    """Columns of ``LineDraws.draw`` for lines ``start`` to ``end - 1``; ``stem_hex(i)`` is
    ``f"{stem:032x}"`` and ``low_hex(i)`` is ``f"{stem & (2**64 - 1):016x}"`` for line
    ``start + i``. ``high`` and ``low`` hold those hex halves, 16 digits a line, for callers
    that slice them inline."""

    __slots__ = ("start", "end", "u_missing", "u_error", "u_kind", "high", "low")

    def __init__(
        self, start: int, u_missing: list[float], u_error: list[float], u_kind: list[float], high: str, low: str
    ) -> None:
        self.start = start
        self.end = start + len(u_missing)
        self.u_missing = u_missing
        self.u_error = u_error
        self.u_kind = u_kind
        self.high = high
        self.low = low

    def __len__(self) -> int:
        return len(self.u_missing)

    def stem_hex(self, i: int) -> str:
        return self.high[16 * i : 16 * i + 16] + self.low[16 * i : 16 * i + 16]

    def low_hex(self, i: int) -> str:
        return self.low[16 * i : 16 * i + 16]


def _splitmix_array(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed: np.ndarray = x ^ (x >> np.uint64(31))
    return mixed


_U21 = float(1 << 21)
_M21 = (1 << 21) - 1


def weighted_choice(weights: Mapping[str, float], u: float) -> str:
    total = sum(weights.values())
    target = u * total
    running = 0.0
    last = ""
    for kind, weight in weights.items():
        if weight <= 0:
            continue
        running += weight
        last = kind
        if target < running:
            return kind
    return last


def fingerprint(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=12).hexdigest()


class FaultState:
    """Per-run counters: attempts per request fingerprint and per route, downloads dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: dict[str, int] = defaultdict(int)
        self._route_calls: dict[str, int] = defaultdict(int)
        self._dropped: set[str] = set()

    def next_attempt(self, key: str) -> int:
        """0 for the first request with this fingerprint, 1 for the retry, and so on."""
        with self._lock:
            attempt = self._attempts[key]
            self._attempts[key] = attempt + 1
            return attempt

    def next_route_call(self, route: str) -> int:
        with self._lock:
            call = self._route_calls[route]
            self._route_calls[route] = call + 1
            return call

    def claim_drop(self, download: str) -> bool:
        """True once per download: that response is cut off part-way."""
        with self._lock:
            if download in self._dropped:
                return False
            self._dropped.add(download)
            return True
