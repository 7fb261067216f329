"""`batch-pipelines advise`: a verdict with its reason and money, JSON with exact decimals, bad input exit 2."""

import orjson
import pytest
from click.testing import CliRunner

from batch_pipelines.cli import main

BASE = ["advise", "--model", "gpt-5.4-mini", "--input-tokens", "2k", "--output-tokens", "300"]


def run(*args: str):
    return CliRunner().invoke(main, [*BASE, *args])


@pytest.mark.parametrize(
    ("args", "verdict", "case"),
    [
        (["--calls-per-day", "50k", "--blocked", "no", "--deadline", "6h"], "batch", "background"),
        (["--calls-per-day", "50k", "--blocked", "yes"], "sync", "latency_bound"),
        (["--calls-per-day", "500", "--blocked", "no"], "sync: not worth it", "low_volume"),
        (["--calls-per-day", "50k", "--blocked", "no", "--deadline", "20m"], "sync", "tight_deadline"),
        (["--calls-per-day", "50k", "--blocked", "no", "--deadline", "2h", "--chain-steps", "5"], "batch", "chained"),
    ],
)
def test_json_verdicts(args, verdict, case):
    """Each case prints its verdict and case in one JSON object."""
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    payload = orjson.loads(result.output)
    assert (payload["verdict"], payload["case"]) == (verdict, case)


def test_json_money_is_exact():
    """50k calls a day of 2k in + 300 out on gpt-5.4-mini: $142.50 / $71.25 a day, $2,137.50 saved a month."""
    payload = orjson.loads(run("--calls-per-day", "50k", "--blocked", "no", "--json").output)
    assert payload["sync"] == {"per_call": "0.00285", "per_day": "142.50", "per_month": "4275.00"}
    assert payload["batch"]["per_day"] == "71.25"
    assert payload["saving_per_month"] == "2137.50"
    assert payload["break_even_calls_per_day"] == 1170


def test_text_output_shows_lanes_verdict_saving_and_break_even():
    """The text form has the lane table, the verdict, the reason, the saving and the break-even."""
    result = run("--calls-per-day", "500", "--blocked", "no", "--min-monthly-saving", "100")
    assert result.exit_code == 0, result.output
    assert "verdict: sync: not worth it" in result.output
    assert "$100.00 a month worth the plumbing" in result.output
    assert "break-even: 2,340 calls a day" in result.output
    assert "lever prompt caching" in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--calls-per-day", "50k", "--blocked", "maybe"], "maybe"),
        (["--calls-per-day", "50k", "--blocked", "no", "--deadline", "soon"], "not a duration"),
        (["--calls-per-day", "-5", "--blocked", "no"], "not a token count"),
        (["--calls-per-day", "5", "--blocked", "no", "--chain-steps", "0"], "chain-steps"),
        (["--calls-per-day", "5", "--blocked", "no", "--model", "nope"], "unknown model"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(args, words):
    """A bad flag value exits with code 2 and says what is wrong."""
    result = run(*args)
    assert result.exit_code == 2
    assert words in result.output
