"""``batch-pipelines emulator``: serve the local provider in the foreground."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from batch_pipelines.core.errors import ConfigError
from batch_pipelines.emulator.app import Emulator
from batch_pipelines.emulator.server import bind, make_server

DEFAULT_STATE_DIR = ".emulator"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command(name="emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Where files and batches persist across restarts.",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Virtual seconds per real second (0 freezes the clock).",
)
@click.option(
    "--profile",
    "profile",
    default=None,
    help="Fault/timing profile: a YAML file or a bundled name (default, demo, faulty).",
)
@click.option(
    "--api-key",
    envvar="BATCH_PIPELINES_EMULATOR_API_KEY",
    default=None,
    help="Require this key (default: any non-empty key).",
)
def emulator_command(
    host: str, port: int, state_dir: Path, time_scale: float, profile: str | None, api_key: str | None
) -> None:
    """Serve the OpenAI- and Anthropic-compatible local provider (no key, no network)."""
    try:
        emulator = Emulator(state_dir, profile=profile, time_scale=time_scale, api_key=api_key)
    except ConfigError as exc:
        raise click.UsageError(exc.message) from None
    if not _is_loopback(host):
        click.echo(f"warning: binding {host}, not loopback: anyone who can reach it can use the emulator", err=True)
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"emulator on http://{shown}:{actual} (OpenAI base URL http://{shown}:{actual}/v1), state in "
        f"{state_dir}, time scale {time_scale}"
    )
    make_server(emulator, log_level="info", access_log=False).run(sockets=[sock])
