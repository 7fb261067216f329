"""Ledger.spend_between: attempts closed in a window, summed exactly, with the invoice's flags (SQLite, PostgreSQL)."""

from datetime import timedelta

from batch_pipelines.core.requests import Lane
from batch_pipelines_tests.ledger.helpers import COST, JOB, PARTITION, PROVIDER, USAGE, costs, ids, requests, succeeded


def test_spend_between_counts_attempts_closed_in_the_window_with_their_flags(ledger, clock):
    """Batch answers, a promoted sync answer and its paid-twice batch answer land in the window; later ones do not."""
    ledger.record_items(JOB, PARTITION, requests(4), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(4), batch_key="batch-1", lane=Lane.BATCH)
    start = clock.now
    ledger.promote_items(JOB, PARTITION, ["item-0003"], batch_key="promo-1")
    ledger.record_outcomes(JOB, PARTITION, "promo-1", succeeded(["item-0003"]), costs(["item-0003"]), lane=Lane.SYNC)
    ledger.record_outcomes(JOB, PARTITION, "batch-1", succeeded(ids(4)[2:]), costs(ids(4)[2:]))
    clock.advance(timedelta(days=1))
    ledger.record_outcomes(JOB, PARTITION, "batch-1", succeeded(ids(4)[:2]), costs(ids(4)[:2]))
    groups = ledger.spend_between(start, start + timedelta(days=1))
    by_flags = {(g.lane, g.promoted, g.superseded): g for g in groups}
    assert set(by_flags) == {(Lane.SYNC, True, False), (Lane.BATCH, False, False), (Lane.BATCH, False, True)}
    assert by_flags[(Lane.BATCH, False, True)].cost_usd == COST[0]  # item-0003's batch answer: paid twice
    assert by_flags[(Lane.BATCH, False, False)].usage == USAGE  # item-0002 only; 0000 and 0001 closed next day
    assert sum(g.attempts for g in groups) == 3 and all(g.job == JOB and g.succeeded for g in groups)
    later = ledger.spend_between(start + timedelta(days=1), start + timedelta(days=2))
    assert sum(g.attempts for g in later) == 2
    assert sum((g.cost_usd for g in [*groups, *later]), COST[0] * 0) == ledger.partition_totals(JOB, PARTITION).cost_usd
