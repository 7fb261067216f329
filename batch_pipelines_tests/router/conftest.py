"""Fixtures for the router tests: one emulator per module on a frozen virtual clock, a fresh router per test."""

from __future__ import annotations

import pytest

from batch_pipelines.core.flush import FlushPolicy
from batch_pipelines.emulator.testing import run_emulator
from batch_pipelines.services.router import Router
from batch_pipelines_tests.reliability.pipeline import VirtualTime, build_gateway

# Batches end within a few virtual minutes unless a test says otherwise.
BASE_PROFILE = {"seed": 11, "batch_completion_seconds": {"min": 60, "max": 600}}


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with run_emulator(profile=BASE_PROFILE, state_dir=tmp_path_factory.mktemp("emulator")) as running:
        yield running


@pytest.fixture
def vtime(emu):
    emu.set_profile(BASE_PROFILE)
    return VirtualTime(emu)


def make_router(emu, vtime, root, *, ledger_url=None, flush_policy=FlushPolicy(), worker=None) -> Router:
    gateway = build_gateway(emu, root, vtime, ledger_url=ledger_url)
    return Router(gateway, flush_policy=flush_policy, worker=worker, sleep=lambda s: None)


@pytest.fixture
def router(emu, vtime, tmp_path):
    built = make_router(emu, vtime, tmp_path)
    yield built
    built.close()


def chat(i: int, model: str = "gpt-5.4-mini") -> dict:
    return {
        "model": model,
        "max_completion_tokens": 16,
        "messages": [{"role": "user", "content": f"Labels: billing, bug, other\nTicket {i}: my invoice {i} is wrong"}],
    }


def run_until_collected(router: Router, vtime: VirtualTime, *, step_s: float = 600, limit: int = 50) -> None:
    """Flush, watch and collect, moving the virtual clock a step at a time, until no flush is open."""
    for _ in range(limit):
        router.flush()
        router.watch()
        router.collect()
        if not router.buffer.flushes(["claimed", "submitted"]) and router.buffer.depth()[0] == 0:
            return
        vtime.advance(step_s)
    raise AssertionError("the deferred calls did not all finish")
