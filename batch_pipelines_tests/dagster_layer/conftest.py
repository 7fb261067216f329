"""Fixtures for the Dagster-layer integration tests: an emulator, a resource on it, an instance."""

from __future__ import annotations

import dagster as dg
import pytest

from batch_pipelines.dagster_layer.resources import BatchGatewayResource, LanePolicyConfig
from batch_pipelines.emulator.testing import run_emulator


@pytest.fixture
def emu(tmp_path):
    with run_emulator(
        profile={"seed": 1, "batch_completion_seconds": {"min": 60, "max": 600}}, state_dir=tmp_path / "emu"
    ) as emulator:
        yield emulator


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def make_resource(emulator, tmp_path, *, ledger_url: str | None = None, **lane_policy) -> BatchGatewayResource:
    return BatchGatewayResource(
        emulator_url=emulator.base_url,
        ledger_url=ledger_url or f"sqlite:///{tmp_path / 'ledger.sqlite'}",
        results_dir=str(tmp_path / "results"),
        work_dir=str(tmp_path / "work"),
        lane_policy=LanePolicyConfig(**lane_policy),
    )


@pytest.fixture
def resource(emu, tmp_path) -> BatchGatewayResource:
    return make_resource(emu, tmp_path)
