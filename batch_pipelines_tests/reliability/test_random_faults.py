"""Seeded random fault schedules (at least 100) through the whole pipeline, same invariants each."""

from __future__ import annotations

import random

import pytest

from batch_pipelines_tests.reliability.conftest import BASE_PROFILE
from batch_pipelines_tests.reliability.pipeline import (
    ANTHROPIC_MODEL,
    GEMINI_MODEL,
    OPENAI_MODEL,
    assert_invariants,
    build_gateway,
    drive,
    make_requests,
    start,
    submit,
)

SCHEDULES = 100
GEMINI_SCHEDULES = 30


def random_profile(rng: random.Random) -> dict:
    """A mix of the emulator's faults; malformed lines only on OpenAI, where the batch reports usage."""
    profile: dict = {**BASE_PROFILE, "seed": rng.randrange(1 << 30)}
    menu = {
        "item_error_rate": lambda: rng.choice([0.05, 0.2, 0.5]),
        "item_error_kinds": lambda: {
            k: rng.randint(0, 3) or 1 for k in ("invalid_request_400", "server_error_500", "rate_limited_429")
        },
        "missing_line_rate": lambda: rng.choice([0.05, 0.3]),
        "all_lines_fail": lambda: True,
        "expire_rate": lambda: 1.0,
        "unfinished_at_expiry": lambda: rng.choice([0.1, 0.3, 0.9]),
        "route_5xx_rate": lambda: rng.choice([0.1, 0.3]),
        "sync_429_burst": lambda: rng.randint(1, 3),
        "sync_5xx_rate": lambda: rng.choice([0.1, 0.3]),
        "download_drop_after_bytes": lambda: rng.choice([200, 1000]),
        "cancel_seconds": lambda: rng.choice([60, 600]),
    }
    for key in rng.sample(sorted(menu), rng.randint(1, 4)):
        profile[key] = menu[key]()
    return profile


@pytest.mark.parametrize("seed", range(SCHEDULES))
def test_random_fault_schedule(emu, vtime, tmp_path, seed):
    """Any mix of faults: every item ends once, counts add up, one batch per intent, cost equals usage."""
    rng = random.Random(seed)
    model = OPENAI_MODEL if rng.random() < 0.6 else ANTHROPIC_MODEL
    profile = random_profile(rng)
    if model == OPENAI_MODEL and rng.random() < 0.3:
        profile["malformed_output_lines"] = rng.randint(1, 3)
    _run_schedule(emu, vtime, tmp_path, rng, model, profile)


@pytest.mark.parametrize("seed", range(GEMINI_SCHEDULES))
def test_random_fault_schedule_on_gemini(emu, vtime, tmp_path, seed):
    """The same random fault mixes on Gemini's native protocol (its own seeds, so the schedules above stay put)."""
    rng = random.Random(f"gemini-{seed}")
    _run_schedule(emu, vtime, tmp_path, rng, GEMINI_MODEL, random_profile(rng))


def _run_schedule(emu, vtime, tmp_path, rng, model, profile):
    emu.set_profile(profile)
    gateway = build_gateway(emu, tmp_path, vtime)
    try:
        scenario = start(emu, gateway, vtime, make_requests(rng.randint(5, 25), model=model))
        submit(scenario)
        if rng.random() < 0.2:  # someone cancels the batch in flight
            vtime.advance(rng.choice([10, 60]))
            for row in gateway.ledger.batches(scenario.job, scenario.partition):
                if not row.status.is_terminal:
                    try:
                        gateway.client(row.provider).batch.cancel(row.vendor_batch_id)
                    except Exception:
                        pass  # it ended meanwhile, or the route's injected 5xx: the run goes on
        # Gemini batches expire after 48 h, not 24 h: give the slow schedules the time to get there.
        ticks = 120 if model == GEMINI_MODEL else 80
        drive(scenario, step_seconds=rng.choice([1800, 6 * 3600]), max_ticks=ticks)
        assert_invariants(scenario)
    finally:
        gateway.close()
