"""The client-side rate limiter: per-minute budgets per model, and obedience to the vendor's hints."""

from __future__ import annotations

import asyncio

import pytest

from batch_pipelines.providers.config import ProviderConfig, RateLimits
from batch_pipelines.providers.ratelimit import RateLimiter, RateLimiters, parse_reset
from batch_pipelines_tests.providers.sync_fakes import VirtualClock

WALL = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def limiter(clock: VirtualClock, **limits) -> RateLimiter:
    return RateLimiter(RateLimits(**limits), clock=clock)


def test_unconfigured_limiter_never_waits():
    """With no limits configured or learned, every reservation is free."""
    rl = limiter(VirtualClock())
    assert [rl.reserve(10_000) for _ in range(100)] == [0.0] * 100
    assert not rl.counts_tokens


def test_requests_per_minute_spaces_calls_after_the_burst():
    """60 rpm with a 2 s burst: two calls go at once, the next ones queue one second apart."""
    clock = VirtualClock()
    rl = limiter(clock, requests_per_minute=60, burst_seconds=2)
    assert [rl.reserve() for _ in range(5)] == [0.0, 0.0, 1.0, 2.0, 3.0]


def test_budget_refills_with_time():
    """After the clock moves on, the spent budget is back (up to the burst capacity)."""
    clock = VirtualClock()
    rl = limiter(clock, requests_per_minute=60, burst_seconds=2)
    rl.reserve(), rl.reserve()
    clock.now += 100
    assert [rl.reserve() for _ in range(3)] == [0.0, 0.0, 1.0]


def test_tokens_per_minute_charges_the_estimate():
    """6,000 tpm (100/s) with a 1 s burst: a 300-token call waits 2 s, the next 50-token one 2.5 s."""
    clock = VirtualClock()
    rl = limiter(clock, tokens_per_minute=6_000, burst_seconds=1)
    assert rl.counts_tokens
    assert rl.reserve(300) == pytest.approx(2.0)
    assert rl.reserve(50) == pytest.approx(2.5)


def test_a_call_bigger_than_the_burst_still_gets_through():
    """A reservation larger than the bucket waits for the debt instead of deadlocking."""
    clock = VirtualClock()
    rl = limiter(clock, tokens_per_minute=600, burst_seconds=1)
    assert rl.reserve(100) == pytest.approx((100 - 10) / 10)


def test_settle_refunds_an_overestimate():
    """Settling a 300-token estimate that used 100 returns 200 tokens to the budget."""
    clock = VirtualClock()
    rl = limiter(clock, tokens_per_minute=6_000, burst_seconds=3)
    rl.reserve(300)
    rl.settle(300, 100)
    assert rl.reserve(200) == 0.0
    assert rl.reserve(1) > 0


def test_acquire_sleeps_the_reserved_wait_on_the_injected_sleep():
    """acquire and aacquire sleep exactly the reserved wait, through the injected sleep."""
    clock = VirtualClock()
    rl = limiter(clock, requests_per_minute=60, burst_seconds=1)
    rl.acquire(sleep=clock.sleep)
    rl.acquire(sleep=clock.sleep)
    asyncio.run(rl.aacquire(sleep=clock.asleep))
    assert clock.sleeps == [1.0, 1.0]


def test_retry_after_on_429_pauses_every_caller():
    """A 429 with Retry-After: 5 holds the next reservation for 5 s."""
    clock = VirtualClock()
    rl = limiter(clock)
    rl.observe(429, {"retry-after": "5"})
    assert rl.reserve() == 5.0
    clock.now += 5
    assert rl.reserve() == 0.0


def test_retry_after_on_a_success_is_ignored():
    """Only a 429 turns Retry-After into a pause."""
    rl = limiter(VirtualClock())
    rl.observe(200, {"retry-after": "5"})
    assert rl.reserve() == 0.0


@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"},
        {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "360s"},
        {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": "2023-11-14T22:19:20Z"},
    ],
)
def test_exhausted_remaining_pauses_until_reset(headers):
    """remaining=0 with a reset (duration or RFC 3339 time) pauses until the window resets."""
    clock = VirtualClock()
    rl = limiter(clock)
    rl.observe(200, headers, wall_now=WALL)  # the RFC 3339 time above is WALL + 360 s
    assert rl.reserve() == pytest.approx(360.0)


def test_limit_headers_are_learned_when_none_is_configured():
    """x-ratelimit-limit-requests: 60 makes an unconfigured limiter enforce 60 rpm."""
    clock = VirtualClock()
    rl = limiter(clock, burst_seconds=1)
    rl.observe(200, {"x-ratelimit-limit-requests": "60", "x-ratelimit-limit-tokens": "6000"})
    assert rl.requests_per_minute == 60 and rl.tokens_per_minute == 6000
    assert [rl.reserve() for _ in range(3)] == [0.0, 1.0, 2.0]


def test_a_configured_limit_is_tightened_but_never_loosened():
    """A vendor limit above the configured one is ignored; one below it wins."""
    rl = limiter(VirtualClock(), requests_per_minute=100)
    rl.observe(200, {"x-ratelimit-limit-requests": "10000"})
    assert rl.requests_per_minute == 100
    rl.observe(200, {"x-ratelimit-limit-requests": "30"})
    assert rl.requests_per_minute == 30


def test_remaining_caps_the_local_budget():
    """When the vendor says 1 request remains, only one more goes without waiting."""
    clock = VirtualClock()
    rl = limiter(clock, requests_per_minute=600, burst_seconds=60)
    rl.observe(200, {"x-ratelimit-remaining-requests": "1"})
    assert rl.reserve() == 0.0
    assert rl.reserve() > 0.0


def test_limiters_are_per_model():
    """Each model of a provider has its own budget, with per-model overrides."""
    config = ProviderConfig(
        name="p",
        protocol="openai",
        base_url="https://vendor.test/v1",
        api_key_env="K",
        models=["*"],
        rate_limits=RateLimits(requests_per_minute=60, burst_seconds=1),
        model_rate_limits={"big": RateLimits(requests_per_minute=6, burst_seconds=10)},
    )
    limiters = RateLimiters(config, clock=VirtualClock())
    a, b, big = limiters.for_model("a"), limiters.for_model("b"), limiters.for_model("big")
    assert limiters.for_model("a") is a
    assert a.reserve() == 0.0 and b.reserve() == 0.0
    assert a.reserve() == 1.0
    assert big.requests_per_minute == 6


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("20ms", 0.02),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("2.5", 2.5),
        ("2023-11-14T22:13:30Z", 10.0),
        ("2023-11-14T22:13:10+00:00", 0.0),
        ("soon", None),
        ("", None),
    ],
)
def test_parse_reset(text, seconds):
    """OpenAI durations, plain seconds and Anthropic RFC 3339 times all parse to seconds from now."""
    result = parse_reset(text, wall_now=WALL)
    assert result == (pytest.approx(seconds) if seconds is not None else None)
