"""batch-pipelines simulate-day: the table, TARGET lines, per-call Parquet and PNG; bad configs refused first."""

from __future__ import annotations

import pyarrow.parquet as pq
from click.testing import CliRunner

from batch_pipelines.cli import main
from batch_pipelines.reports.charts import PNG_SIGNATURE

TINY_DAY = """
seed: 9
calls: 30
hours: 1
workloads: {classification: {model: gpt-5.4-mini, items: 5}}
workload_hour: 0.25
"""


def test_simulate_day_prints_the_table_and_writes_the_per_call_table_and_the_chart(tmp_path):
    """A tiny day on quick batches: every call in the Parquet table, a PNG, the five TARGET lines."""
    config = tmp_path / "traffic.yaml"
    config.write_text(TINY_DAY)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["simulate-day", "--config", str(config), "--out", str(out), "--profile", "default"]
    )
    assert result.exit_code == 0, result.output
    assert "realised bill (ledger)" in result.output and "calls lost                      0" in result.output
    assert sum(line.startswith("TARGET economics_") for line in result.output.splitlines()) == 5
    table = pq.read_table(out / "calls.parquet")
    assert table.num_rows == 35 and set(table.column("kind").to_pylist()) <= {
        "interactive",
        "deferrable",
        "classification",
    }
    assert (out / "spend.png").read_bytes().startswith(PNG_SIGNATURE)


def test_simulate_day_refuses_a_bad_traffic_key_before_running(tmp_path):
    """An unknown key is a usage error naming it; no output folder is made."""
    config = tmp_path / "traffic.yaml"
    config.write_text("callz: 10\n")
    result = CliRunner().invoke(main, ["simulate-day", "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "callz" in result.output
    assert not (tmp_path / "out").exists()
