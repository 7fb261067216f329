"""``batch-pipelines simulate-day``: the reference day for your own traffic mix, with its table and files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from batch_pipelines.core.config_files import load_yaml_file
from batch_pipelines.core.day_report import format_table, target_lines
from batch_pipelines.core.day_traffic import TrafficConfig
from batch_pipelines.core.errors import ConfigError


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="YAML traffic mix (keys of TrafficConfig); the reference day's defaults otherwise.")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="simulate-day", show_default=True,
              help="Folder for calls.parquet and spend.png.")  # fmt: skip
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Multiply the calls and workload items (0.01 for a quick look).")  # fmt: skip
@click.option("--profile", default="realistic", show_default=True, help="Emulator profile: bundled name or YAML file.")
def simulate_day_command(config_file: str | None, out_dir: str, scale: float, profile: str) -> None:
    """Run one simulated day through the router and the workloads against the emulator; print the table."""
    from batch_pipelines.reference_day import simulate_day
    from batch_pipelines.reports.day_outputs import cumulative_spend_png, write_calls_parquet

    try:
        raw = load_yaml_file(Path(config_file), "traffic config") if config_file else None
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"traffic config {config_file!r} must be a YAML mapping")
        config = TrafficConfig.from_mapping(raw)
        if scale <= 0:
            raise ConfigError(f"--scale must be positive, got {scale}")
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if scale != 1.0:
        config = config.scaled(scale)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bp-day-") as work:
        run = simulate_day(config, Path(work), profile=profile, echo=click.echo)
    click.echo(format_table(run.figures))
    for line in target_lines(run.figures):
        click.echo(line)
    click.echo(f"wrote {write_calls_parquet(run.records, out / 'calls.parquet')}")
    click.echo(f"wrote {cumulative_spend_png(run.records, out / 'spend.png')}")
