"""Fixtures for the reliability suite: one emulator per module, a fresh gateway per test."""

from __future__ import annotations

import pytest

from batch_pipelines.emulator.testing import run_emulator
from batch_pipelines_tests.reliability.pipeline import VirtualTime, build_gateway

# Batches end within a few virtual minutes; the scenarios move time an hour per tick.
BASE_PROFILE = {"seed": 7, "batch_completion_seconds": {"min": 60, "max": 600}}


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with run_emulator(profile=BASE_PROFILE, state_dir=tmp_path_factory.mktemp("emulator")) as running:
        yield running


@pytest.fixture
def vtime(emu):
    return VirtualTime(emu)


@pytest.fixture
def gateway(emu, vtime, tmp_path):
    gw = build_gateway(emu, tmp_path, vtime)
    yield gw
    gw.close()


def with_profile(emu, **faults):
    """Replace the emulator's profile: the base timing plus this scenario's faults."""
    emu.set_profile({**BASE_PROFILE, **faults})
