"""Client-side rate limiting for the sync lane, per provider and model.

Two token buckets per model (requests and tokens per minute) in "debt" form: a reservation
always succeeds, may drive the level below zero, and returns how long the caller must wait
for the debt to refill. Concurrent callers therefore queue in arrival order without polling.

The limiter also listens to the vendor, which knows about traffic we cannot see (other
workers sharing the organisation's quota):

- ``x-ratelimit-limit-*`` (OpenAI) / ``anthropic-ratelimit-*-limit``: adopted when no limit is
  configured, and only ever to tighten a configured one;
- ``*-remaining-*``: our bucket never holds more than the vendor says remains; at zero we pause
  until the matching ``*-reset-*`` (a duration such as ``6m0s`` or an RFC 3339 time);
- ``Retry-After`` on a 429 pauses every caller of that model until it has passed.

Clock and sleep are injectable; :meth:`RateLimiter.reserve` itself never sleeps.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime

import httpx

from batch_pipelines.providers.config import ProviderConfig, RateLimits
from batch_pipelines.providers.retry import parse_retry_after

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str, *, wall_now: float) -> float | None:
    """Seconds until a rate-limit window resets: '1s', '6m0s', '20ms', '2.5', or an RFC 3339 time."""
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - wall_now)


class _Bucket:
    """A per-minute budget refilled continuously; ``level`` may go negative (debt)."""

    __slots__ = ("per_minute", "capacity", "rate", "level", "updated", "burst_seconds")

    def __init__(self, per_minute: int, burst_seconds: float, now: float) -> None:
        self.burst_seconds = burst_seconds
        self.updated = now
        self.level = 0.0
        self.per_minute = 0
        self.capacity = 0.0
        self.rate = 0.0
        self.set_limit(per_minute)
        self.level = self.capacity

    def set_limit(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        # At least one unit, or a tiny limit could never admit anything.
        self.capacity = max(1.0, self.rate * self.burst_seconds)
        self.level = min(self.level, self.capacity)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def reserve(self, amount: float, now: float) -> float:
        self._refill(now)
        self.level -= amount
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def clamp(self, remaining: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.level, remaining)

    def refund(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """Requests- and tokens-per-minute limits for one provider+model, plus the vendor's pauses."""

    def __init__(self, limits: RateLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._burst = limits.burst_seconds
        self._configured_rpm = limits.requests_per_minute
        self._configured_tpm = limits.tokens_per_minute
        now = clock()
        self._requests = _Bucket(limits.requests_per_minute, self._burst, now) if limits.requests_per_minute else None
        self._tokens = _Bucket(limits.tokens_per_minute, self._burst, now) if limits.tokens_per_minute else None
        self._paused_until = 0.0
        self._lock = threading.Lock()

    @property
    def counts_tokens(self) -> bool:
        """Whether a token estimate matters (callers skip tokenising when it does not)."""
        return self._tokens is not None

    @property
    def requests_per_minute(self) -> int | None:
        return self._requests.per_minute if self._requests else None

    @property
    def tokens_per_minute(self) -> int | None:
        return self._tokens.per_minute if self._tokens else None

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def reserve(self, tokens: int = 0) -> float:
        """Take one request and ``tokens`` from the budget; return the seconds to wait before sending."""
        with self._lock:
            now = self._clock()
            wait = self._paused_until - now
            if self._requests is not None:
                wait = max(wait, self._requests.reserve(1, now))
            if self._tokens is not None and tokens:
                wait = max(wait, self._tokens.reserve(tokens, now))
            return max(0.0, wait)

    def acquire(self, tokens: int = 0, *, sleep: Callable[[float], None] = time.sleep) -> float:
        wait = self.reserve(tokens)
        if wait > 0:
            sleep(wait)
        return wait

    async def aacquire(self, tokens: int = 0, *, sleep: Callable[[float], object] = asyncio.sleep) -> float:
        wait = self.reserve(tokens)
        if wait > 0:
            await sleep(wait)  # type: ignore[misc]
        return wait

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct a reservation once the response reports what the call really used."""
        if self._tokens is None or estimated_tokens == actual_tokens:
            return
        with self._lock:
            self._tokens.refund(estimated_tokens - actual_tokens, self._clock())

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` from now (a vendor's Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def observe(self, status_code: int, headers: Mapping[str, str], *, wall_now: float | None = None) -> None:
        """Learn from one response's headers (any status)."""
        found: dict[str, str] = {}
        for key, value in headers.items():
            key = key.lower()
            if "ratelimit" in key:
                found[_normalise_header(key)] = value
        hint = parse_retry_after(headers) if status_code == 429 else None
        if not found and hint is None:
            return
        wall = time.time() if wall_now is None else wall_now
        with self._lock:
            now = self._clock()
            for kind in ("requests", "tokens"):
                self._learn(kind, found, now, wall)
            if hint is not None:
                self._paused_until = max(self._paused_until, now + hint)

    def _learn(self, kind: str, found: dict[str, str], now: float, wall: float) -> None:
        limit = _as_int(found.get(f"limit-{kind}"))
        bucket = self._requests if kind == "requests" else self._tokens
        configured = self._configured_rpm if kind == "requests" else self._configured_tpm
        if limit:
            if bucket is None:
                bucket = _Bucket(limit, self._burst, now)
                if kind == "requests":
                    self._requests = bucket
                else:
                    self._tokens = bucket
            elif limit < bucket.per_minute or (configured is None and limit != bucket.per_minute):
                bucket.set_limit(min(limit, configured) if configured else limit)
        remaining = _as_int(found.get(f"remaining-{kind}"))
        if remaining is None:
            return
        if bucket is not None:
            bucket.clamp(remaining, now)
        if remaining <= 0:
            reset = found.get(f"reset-{kind}")
            seconds = parse_reset(reset, wall_now=wall) if reset else None
            if seconds:
                self._paused_until = max(self._paused_until, now + seconds)


def _normalise_header(key: str) -> str:
    """'x-ratelimit-remaining-tokens' and 'anthropic-ratelimit-tokens-remaining' -> 'remaining-tokens'."""
    if key.startswith("x-ratelimit-"):
        return key[len("x-ratelimit-") :]
    if key.startswith("anthropic-ratelimit-"):
        parts = key[len("anthropic-ratelimit-") :].split("-")
        # anthropic-ratelimit-{requests|tokens|input-tokens|output-tokens}-{limit|remaining|reset}
        if len(parts) == 2:
            return f"{parts[1]}-{parts[0]}"
        return f"{parts[-1]}-{'-'.join(parts[:-1])}"
    return key


def _as_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


class RateLimiters:
    """One :class:`RateLimiter` per model of a provider, created on first use."""

    def __init__(self, config: ProviderConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._by_model: dict[str, RateLimiter] = {}
        self._lock = threading.Lock()

    def for_model(self, model: str) -> RateLimiter:
        limiter = self._by_model.get(model)
        if limiter is None:
            with self._lock:
                limiter = self._by_model.get(model)
                if limiter is None:
                    limiter = RateLimiter(self._config.limits_for(model), clock=self._clock)
                    self._by_model[model] = limiter
        return limiter

    def observe(self, model: str, response: httpx.Response) -> None:
        self.for_model(model).observe(response.status_code, response.headers)
