"""Hostile partition keys: a whole partition runs, and every file it writes stays in the data folder."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from batch_pipelines.core.file_names import name_from_file_name
from batch_pipelines_tests.reliability.pipeline import assert_invariants, build_gateway, drive, make_requests, start
from batch_pipelines_tests.reliability.pipeline import submit as submit_partition


@pytest.mark.parametrize("key", ["../escape", "/absolute/key", "..", "a/../../b"])
def test_a_hostile_partition_key_never_writes_outside_the_data_folder(emu, vtime, tmp_path, key):
    """Submit, collect and write the table for key ../escape (etc.): nothing lands outside data/, the table
    is found by its key, and its file name reads back as the key."""
    data = tmp_path / "sandbox" / "data"
    gateway = build_gateway(emu, data, vtime)
    try:
        scenario = start(emu, gateway, vtime, make_requests(6), partition=key)
        submit_partition(scenario)
        drive(scenario)
        assert_invariants(scenario)
        table = gateway.results_path(scenario.job, key)
        assert scenario.last.results_path == table and table.exists()
        assert name_from_file_name(table.name.removesuffix(".parquet")) == key
        assert pq.read_table(table).num_rows == 6
    finally:
        gateway.close()
    outside = [p for p in tmp_path.rglob("*") if not p.resolve().is_relative_to(data.resolve())]
    assert outside == [tmp_path / "sandbox"]
    assert all(p.resolve().is_relative_to(data.resolve()) for p in data.rglob("*"))
