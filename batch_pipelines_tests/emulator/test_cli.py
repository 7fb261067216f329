"""The ``batch-pipelines emulator`` command's surface."""

from __future__ import annotations

from click.testing import CliRunner

from batch_pipelines.cli import main
from batch_pipelines.emulator.cli import emulator_command


def test_emulator_command_has_the_documented_options():
    """The command takes --host, --port, --state-dir, --time-scale, --profile and --api-key, loopback by default."""
    options = {p.name: p for p in emulator_command.params}
    assert set(options) == {"host", "port", "state_dir", "time_scale", "profile", "api_key"}
    assert (
        options["host"].default == "127.0.0.1"
        and options["port"].default == 8765
        and options["time_scale"].default == 1.0
    )


def test_emulator_is_registered_and_rejects_unknown_profiles(tmp_path):
    """`batch-pipelines emulator` exists and a profile that is neither a file nor bundled is a usage error."""
    result = CliRunner().invoke(main, ["emulator", "--state-dir", str(tmp_path), "--profile", "no-such-profile"])
    assert result.exit_code == 2 and "no-such-profile" in result.output
