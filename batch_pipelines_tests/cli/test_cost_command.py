"""`batch-pipelines cost` reproduces PRICES.md and refuses bad input with exit code 2."""

import subprocess
import sys
from decimal import Decimal

import orjson
import pytest
from click.testing import CliRunner

from batch_pipelines.cli import main


def run(*args: str):
    return CliRunner().invoke(main, ["cost", *args])


@pytest.mark.parametrize(
    ("args", "sync", "batch", "savings"),
    [
        (["--model", "gpt-5.4", "--input-tokens", "30M", "--output-tokens", "10M"], "225.00", "112.50", "112.50"),
        (
            ["--model", "claude-sonnet-4.6", "--input-tokens", "40M", "--output-tokens", "10M"],
            "270.00",
            "135.00",
            "135.00",
        ),
        (
            [
                "--model",
                "claude-sonnet-4.6",
                "--input-tokens",
                "40M",
                "--output-tokens",
                "10M",
                "--structural-discount",
                "0.15",
            ],
            "229.50",
            "114.75",
            "114.75",
        ),
        (
            ["--model", "gpt-5.4", "--input-tokens", "2M", "--output-tokens", "0", "--cached-input-tokens", "1M"],
            "2.75",
            "1.375",
            "1.375",
        ),
        (
            [
                "--model",
                "claude-sonnet-4.6",
                "--input-tokens",
                "40M",
                "--output-tokens",
                "10M",
                "--credit-bonus",
                "0.25",
            ],
            "216.00",
            "108.00",
            "108.00",
        ),
    ],
)
def test_json_output_reproduces_worked_examples(args, sync, batch, savings):
    """--json prints exact decimal strings for sync, batch and savings."""
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    payload = orjson.loads(result.output)
    assert Decimal(payload["sync_usd"]) == Decimal(sync)
    assert Decimal(payload["batch_usd"]) == Decimal(batch)
    assert Decimal(payload["savings_usd"]) == Decimal(savings)
    assert payload["batch_usd"] == batch  # shown exactly, at least to the cent, with no float noise


def test_table_output_shows_both_lanes_and_savings():
    """The human output puts sync and batch side by side with the savings."""
    result = run(
        "--model",
        "claude-sonnet-4.6",
        "--input-tokens",
        "40M",
        "--output-tokens",
        "10M",
        "--structural-discount",
        "15%",
    )
    assert result.exit_code == 0
    assert "$229.50" in result.output and "$114.75" in result.output and "savings $114.75 (50.00%)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gpt-5.4", "--input-tokens", "-1", "--output-tokens", "1"], "is not a token count"),
        (["--model", "gpt-9", "--input-tokens", "1", "--output-tokens", "1"], "unknown model 'gpt-9'"),
        (["--model", "gpt-5.4", "--input-tokens", "1", "--output-tokens", "1", "--structural-discount", "1"], "[0, 1)"),
        (
            ["--model", "gpt-5.4", "--input-tokens", "1", "--output-tokens", "1", "--structural-discount", "-0.2"],
            "[0, 1)",
        ),
        (
            ["--model", "gpt-5.4", "--input-tokens", "1", "--output-tokens", "1", "--cached-input-tokens", "2"],
            "cannot exceed",
        ),
        (
            ["--model", "gpt-5.4", "--input-tokens", "1", "--output-tokens", "1", "--prices", "/nonexistent.yaml"],
            "not found",
        ),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args, message):
    """Negative tokens, unknown models, discounts outside [0, 1) and missing files exit 2, saying why."""
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_console_entry_point_is_installed():
    """The `batch-pipelines` console script runs the same command."""
    script = __import__("pathlib").Path(sys.executable).with_name("batch-pipelines")
    out = subprocess.run(
        [str(script), "cost", "--model", "gpt-5.4", "--input-tokens", "30M", "--output-tokens", "10M", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert orjson.loads(out.stdout)["batch_usd"] == "112.50"


def _price_file(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def test_hostile_input_always_exits_2_with_a_message(tmp_path):
    """A 33-digit token count, /dev/zero, a non-UTF-8 file and absurd rates each exit 2 with a message, promptly."""
    huge_rates = (
        b"models:\n  gpt-5.4:\n    provider: openai\n    kind: chat\n"
        b'    sync: {input: "1e40", output: "1"}\n    batch: {input: "1", output: "1"}\n'
    )
    cases = [
        (["--input-tokens", "1" * 33], "is a digit too many"),
        (["--prices", "/dev/zero"], "larger than 1,000,000 bytes"),
        (["--prices", _price_file(tmp_path, "latin1.yaml", b"\xff\xfemodels: {}")], "not UTF-8"),
        (["--prices", _price_file(tmp_path, "huge.yaml", huge_rates), "--input-tokens", "1000T"], "not a token"),
        (
            ["--prices", _price_file(tmp_path, "huge.yaml", huge_rates), "--input-tokens", str(10**15)],
            "too large to compute",
        ),
        (["--prices", _price_file(tmp_path, "broken.yaml", b"models: {a: 'unterminated\n")], "line 1"),
    ]
    for extra, message in cases:
        args = {"--model": "gpt-5.4", "--input-tokens": "1", "--output-tokens": "1"}
        flags = [*extra]
        for flag, value in args.items():
            if flag not in flags:
                flags += [flag, value]
        result = run(*flags)
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output, (extra, result.output)
        assert "Traceback" not in result.output


def test_advise_refuses_absurd_numbers_with_exit_2():
    """advise: a 20-digit deadline, a trillion chain steps, a 1e30 saving floor or a 1e9999 bonus exit 2 promptly."""
    base = ["advise", "--model", "gpt-5.4", "--input-tokens", "1", "--output-tokens", "1", "--calls-per-day", "1000"]
    base += ["--blocked", "no"]
    for extra, message in [
        (["--deadline", "99999999999999999999d"], "longer than ten years"),
        (["--deadline", "1h", "--chain-steps", "999999999999"], "1<=x<=1000"),
        (["--deadline", "1h", "--min-monthly-saving", "1e30"], "must be in [0, 1,000,000,000,000)"),
        (["--deadline", "1h", "--credit-bonus", "1e9999"], "must be in [0, 1,000,000,000,000)"),
    ]:
        result = CliRunner().invoke(main, [*base, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output, (extra, result.output)
