"""The reference day's pure parts: the traffic mix, the perfect-foresight oracle and the report's arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from batch_pipelines.core.day_oracle import OracleCall, optimum, oracle_lane
from batch_pipelines.core.day_report import CallRecord, RunCounters, summarise, target_lines
from batch_pipelines.core.day_traffic import TrafficConfig, generate
from batch_pipelines.core.errors import ConfigError
from batch_pipelines.core.requests import Lane

D = Decimal


@pytest.mark.parametrize(
    ("call", "lane"),
    [
        (OracleCall("interactive", 0, None, 60, D("2"), D("1")), Lane.SYNC),  # a caller waits
        (OracleCall("deferrable", 0, None, None, D("2"), D("1")), Lane.BATCH),  # no deadline: batch even if it expires
        (OracleCall("deferrable", 100, 3700, 3600, D("2"), D("1")), Lane.BATCH),  # ends exactly at the deadline
        (OracleCall("deferrable", 100, 3699, 3600, D("2"), D("1")), Lane.SYNC),  # one second late
        (OracleCall("deferrable", 0, 7200, None, D("2"), D("1")), Lane.SYNC),  # its batch would expire
        (OracleCall("classification", 3600, 43200, 3600, D("2"), D("1")), Lane.BATCH),  # a workload item
    ],
)
def test_oracle_puts_a_call_on_batch_exactly_when_a_batch_meets_its_deadline(call, lane):
    """Interactive on sync; deferrable on batch iff enqueue + actual turnaround <= deadline (or no deadline)."""
    assert oracle_lane(call) is lane


def test_optimum_sums_each_calls_price_on_the_oracles_lane():
    """Hand-computed: 2 (interactive, sync) + 0.5 (batch) + 3 (late batch: sync) = 5.5."""
    calls = [
        OracleCall("interactive", 0, None, None, D("2"), D("1")),
        OracleCall("deferrable", 0, None, 10, D("1"), D("0.5")),
        OracleCall("deferrable", 0, 60, 120, D("3"), D("1.5")),
    ]
    assert optimum(calls) == D("5.5")


def _record(kind, deadline, answered, status="succeeded", lane="batch", cost="1", sync="2", batch="1", oracle="batch"):
    return CallRecord("c", kind, "m", 0.0, deadline, answered, status, lane, D(cost), D(sync), D(batch), oracle)


@pytest.mark.parametrize(
    ("records", "realised", "paid_twice", "expected"),
    [
        # all on batch, on time: realised 2 of all-sync 4 (50% saved), optimum 2, nothing missed or lost
        (
            [_record("deferrable", 100, 50), _record("deferrable", None, 9000)],
            "2",
            "0",
            {"all_sync": D(4), "optimum": D(2), "savings": D(2), "pct": D(50), "misses": 0, "worst": 0.0, "lost": 0},
        ),
        # one answered 30 s late, one never answered (lost and missed), one interactive on sync
        (
            [
                _record("deferrable", 100, 130, lane="sync", cost="2"),
                _record("deferrable", 100, None, status="submitted", lane=None, cost="0", sync="0", batch="0"),
                _record("interactive", None, 0, lane="sync", cost="3", sync="3", batch="1.5", oracle="sync"),
            ],
            "5.05",
            "0.05",
            {
                "all_sync": D(5),
                "optimum": D(4),
                "savings": D("-0.05"),
                "pct": D(-1),
                "misses": 2,
                "worst": 30.0,
                "lost": 1,
            },
        ),  # fmt: skip
    ],
)
def test_summary_arithmetic_on_hand_computed_days(records, realised, paid_twice, expected):
    """All-sync, optimum, savings, misses (late or never), worst lateness and losses add up as computed by hand."""
    figures = summarise(records, realised_usd=D(realised), counters=RunCounters(paid_twice_usd=D(paid_twice)))
    assert figures.all_sync_usd == expected["all_sync"]
    assert figures.optimum_usd == expected["optimum"]
    assert figures.savings_usd == expected["savings"]
    assert figures.savings_pct == expected["pct"]
    assert figures.misses == expected["misses"]
    assert figures.worst_lateness_s == expected["worst"]
    assert figures.lost == expected["lost"]
    assert figures.paid_twice_share == D(paid_twice) / D(realised)


def test_target_lines_say_met_or_missed_against_the_issues_bounds():
    """1.02x the optimum, 0 misses, 1% paid twice, 0 lost, 600 s of wall: met inside, missed outside."""
    good = summarise([_record("deferrable", 100, 50)], realised_usd=D("1.02"), counters=RunCounters(wall_seconds=1))
    assert all(line.endswith(" met") for line in target_lines(good))
    bad = summarise(
        [_record("deferrable", 100, 150)],
        realised_usd=D("1.03"),
        counters=RunCounters(paid_twice_usd=D("0.02"), wall_seconds=601),
    )
    assert [line.split(":")[0] for line in target_lines(bad) if line.endswith(" missed")] == [
        "TARGET economics_bill_vs_optimum",
        "TARGET economics_deadline_misses",
        "TARGET economics_paid_twice",
        "TARGET economics_wall_time",
    ]


def test_traffic_is_seeded_and_follows_the_configured_mix():
    """The same seed gives the same day; shares of interactive calls, deadlines and models follow the config."""
    config = TrafficConfig(calls=4000, workloads={"evals": ("claude-sonnet-4.6", 10)})
    day = generate(config)
    assert day == generate(config)
    app = [c for c in day if not c.is_workload]
    assert len(app) == 4000 and [c.at_s for c in app] == sorted(c.at_s for c in app)
    assert 0.22 < sum(c.kind == "interactive" for c in app) / 4000 < 0.28
    deferrable = [c for c in app if c.kind == "deferrable"]
    assert 0.26 < sum(c.deadline_s is None for c in deferrable) / len(deferrable) < 0.34
    assert {c.model for c in app} == set(config.models)
    assert any(c.cache_friendly for c in app) and not any(c.cache_friendly for c in app if "embedding" in c.model)
    afternoon = sum(12 * 3600 <= c.at_s < 16 * 3600 for c in app)
    night = sum(0 <= c.at_s < 4 * 3600 for c in app)
    assert afternoon > 2 * night  # the daytime peak
    items = [c for c in day if c.is_workload]
    assert len(items) == 10 and {c.at_s for c in items} == {3600.0}


@pytest.mark.parametrize(
    "raw",
    [
        {"callz": 5},
        {"calls": -1},
        {"interactive_share": 1.5},
        {"deadlines": {"soon": 1}},
        {"models": {}},
        {"workloads": {"evals": {"model": "gpt-5.4-mini"}}},
        {"hours": 0},
    ],
)
def test_bad_traffic_config_is_refused_naming_the_key(raw):
    """An unknown key or a bad value is a ConfigError that names it."""
    with pytest.raises(ConfigError, match=next(iter(raw))):
        TrafficConfig.from_mapping(raw)
