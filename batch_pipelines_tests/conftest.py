"""Fixtures shared by every test package."""

from __future__ import annotations

from typing import Iterator

import pytest

from batch_pipelines.emulator.testing import RunningEmulator, run_emulator


@pytest.fixture
def emulator(tmp_path) -> Iterator[RunningEmulator]:
    """A fresh local provider on loopback: frozen virtual clock, default profile, own state dir."""
    with run_emulator(state_dir=tmp_path / "emulator-state") as running:
        yield running
