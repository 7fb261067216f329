"""Items and attempts: recording, assignment, compare-and-set outcomes, retries, money."""

from __future__ import annotations

from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import event

from batch_pipelines.core.errors import LedgerError
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.requests import Endpoint, Lane
from batch_pipelines.core.usage import ZERO_USAGE, Usage
from batch_pipelines.ledger import Ledger

from .helpers import COST, DEADLINE, JOB, MODEL, PARTITION, PROVIDER, USAGE, costs, ids, requests, succeeded


def test_record_items_round_trips_every_field(ledger, clock):
    """A recorded item comes back pending with its request's fields, aware UTC times and zero money."""
    assert ledger.record_items(JOB, PARTITION, requests(3), provider=PROVIDER) == 3
    row = ledger.get_item(JOB, PARTITION, "item-0001")
    assert row is not None
    assert (row.job, row.partition, row.custom_id, row.provider, row.model) == (
        JOB,
        PARTITION,
        "item-0001",
        PROVIDER,
        MODEL,
    )
    assert row.endpoint is Endpoint.CHAT and row.lane is Lane.BATCH
    assert (row.status, row.attempts, row.batch_key) == ("pending", 0, None)
    assert row.deadline == DEADLINE and row.deadline.tzinfo is UTC
    assert row.created_at == clock.now and row.created_at.tzinfo is UTC
    assert row.estimated_input_tokens == 42
    assert row.usage == ZERO_USAGE
    assert row.cost_usd == Decimal(0) and isinstance(row.cost_usd, Decimal)
    assert ledger.get_item(JOB, PARTITION, "nope") is None


def test_record_items_is_idempotent(ledger):
    """Recording the same requests again inserts nothing and leaves the first rows as they were."""
    assert ledger.record_items(JOB, PARTITION, requests(20), provider=PROVIDER) == 20
    assert ledger.record_items(JOB, PARTITION, requests(25, lane=Lane.SYNC), provider="other") == 5
    assert ledger.item_counts(JOB, PARTITION) == {"pending": 25}
    first = ledger.get_item(JOB, PARTITION, "item-0000")
    assert first.provider == PROVIDER and first.lane is Lane.BATCH


def test_record_items_streams_a_generator_chunk_by_chunk(ledger, ledger_url):
    """A generator is consumed one chunk at a time, and each chunk is committed before the next is read."""
    seen_while_generating = []
    observer = Ledger(ledger_url)

    def generate():
        for i, request in enumerate(requests(30)):
            if i == 20:
                seen_while_generating.append(observer.item_counts(JOB, PARTITION).get("pending", 0))
            yield request

    try:
        assert ledger.record_items(JOB, PARTITION, generate(), provider=PROVIDER) == 30
    finally:
        observer.close()
    assert seen_while_generating == [14]  # two chunks of 7 were already durable


def test_partitions_are_separate(ledger):
    """The same custom_id in two partitions or two jobs is two items."""
    ledger.record_items(JOB, PARTITION, requests(3), provider=PROVIDER)
    ledger.record_items(JOB, "2025-03-02", requests(3), provider=PROVIDER)
    ledger.record_items("other-job", PARTITION, requests(2), provider=PROVIDER)
    assert ledger.assign_items(JOB, PARTITION, ids(3), batch_key="k1", lane=Lane.BATCH) == 3
    assert ledger.item_counts(JOB, "2025-03-02") == {"pending": 3}
    assert ledger.item_counts("other-job", PARTITION) == {"pending": 2}


def test_assign_items_moves_pending_items_once(ledger):
    """Assigning moves pending items to submitted with one more attempt; replaying it changes nothing."""
    ledger.record_items(JOB, PARTITION, requests(20), provider=PROVIDER)
    assert ledger.assign_items(JOB, PARTITION, ids(15), batch_key="shard-1", lane=Lane.BATCH) == 15
    assert ledger.assign_items(JOB, PARTITION, ids(15), batch_key="shard-1", lane=Lane.BATCH) == 0
    assert ledger.assign_items(JOB, PARTITION, ids(15), batch_key="shard-2", lane=Lane.BATCH) == 0
    assert ledger.item_counts(JOB, PARTITION) == {"pending": 5, "submitted": 15}
    row = ledger.get_item(JOB, PARTITION, "item-0003")
    assert (row.status, row.batch_key, row.attempts, row.lane) == ("submitted", "shard-1", 1, Lane.BATCH)
    totals = ledger.partition_totals(JOB, PARTITION)
    assert (totals.open_attempts, totals.attempts) == (15, 0)


def test_assign_items_refuses_a_reused_batch_key(ledger):
    """Re-submitting an item under a batch_key it already finished under is refused, and nothing moves."""
    ledger.record_items(JOB, PARTITION, requests(3), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(3), batch_key="k1", lane=Lane.BATCH)
    expired = [ItemOutcome(c, OutcomeKind.EXPIRED, reason="window closed") for c in ids(3)]
    ledger.record_outcomes(JOB, PARTITION, "k1", expired)
    assert ledger.mark_for_retry(JOB, PARTITION, ids(3)) == 3
    with pytest.raises(LedgerError, match="already used"):
        ledger.assign_items(JOB, PARTITION, ids(3), batch_key="k1", lane=Lane.BATCH)
    assert ledger.item_counts(JOB, PARTITION) == {"pending": 3}


def test_record_outcomes_moves_items_and_counts_usage_and_cost(ledger):
    """Outcomes move submitted items to their kind and add usage and exact cost to items and totals."""
    ledger.record_items(JOB, PARTITION, requests(10), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(10), batch_key="k1", lane=Lane.BATCH)
    outcomes = succeeded(ids(8)) + [
        ItemOutcome(
            "item-0008", OutcomeKind.FAILED, reason="Invalid model", status_code=400, error_code="invalid_request"
        ),
        ItemOutcome("item-0009", OutcomeKind.INVALID_OUTPUT, reason="label 'x' not allowed", usage=USAGE),
    ]
    assert ledger.record_outcomes(JOB, PARTITION, "k1", outcomes, costs(ids(10))) == 10
    assert ledger.item_counts(JOB, PARTITION) == {"succeeded": 8, "failed": 1, "invalid_output": 1}
    failed = ledger.get_item(JOB, PARTITION, "item-0008")
    assert (failed.reason, failed.status_code, failed.error_code) == ("Invalid model", 400, "invalid_request")
    ok = ledger.get_item(JOB, PARTITION, "item-0000")
    assert ok.usage == USAGE and ok.cost_usd == COST[0] and ok.sync_equivalent_usd == COST[1]
    totals = ledger.partition_totals(JOB, PARTITION)
    assert totals.item_count == 10 and totals.count(OutcomeKind.SUCCEEDED) == 8
    assert (totals.attempts, totals.open_attempts) == (10, 0)
    assert totals.usage == Usage(9000, 5400, 900, 450, 90)
    assert totals.cost_usd == Decimal("0.00000375") and totals.sync_equivalent_usd == Decimal("0.0000075")
    assert totals.savings_usd == Decimal("0.00000375")
    assert totals.usage_by_model == {MODEL: Usage(9000, 5400, 900, 450, 90)}


def test_replayed_outcomes_change_nothing(ledger):
    """Recording the same batch's outcomes again neither moves items nor counts cost twice."""
    ledger.record_items(JOB, PARTITION, requests(10), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(10), batch_key="k1", lane=Lane.BATCH)
    assert ledger.record_outcomes(JOB, PARTITION, "k1", succeeded(ids(10)), costs(ids(10))) == 10
    before = ledger.partition_totals(JOB, PARTITION)
    assert ledger.record_outcomes(JOB, PARTITION, "k1", succeeded(ids(10)), costs(ids(10))) == 0
    repriced = costs(ids(10), (Decimal("1"), Decimal("2")))  # e.g. a price book changed between runs
    assert ledger.record_outcomes(JOB, PARTITION, "k1", succeeded(ids(10), ZERO_USAGE), repriced) == 0
    assert ledger.partition_totals(JOB, PARTITION) == before
    assert before.cost_usd == COST[0] * 10


def test_outcomes_under_a_wrong_batch_key_change_nothing(ledger):
    """Outcomes for a batch_key the items were never assigned to touch neither items nor totals."""
    ledger.record_items(JOB, PARTITION, requests(5), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(5), batch_key="k1", lane=Lane.BATCH)
    assert ledger.record_outcomes(JOB, PARTITION, "k-other", succeeded(ids(5)), costs(ids(5))) == 0
    assert ledger.record_outcomes(JOB, "other-partition", "k1", succeeded(ids(5)), costs(ids(5))) == 0
    assert ledger.item_counts(JOB, PARTITION) == {"submitted": 5}
    totals = ledger.partition_totals(JOB, PARTITION)
    assert (totals.attempts, totals.open_attempts, totals.cost_usd) == (0, 5, Decimal(0))


def test_a_second_outcome_for_one_item_is_ignored(ledger):
    """Within a call and across chunks, the first outcome for a custom_id wins and is counted once."""
    ledger.record_items(JOB, PARTITION, requests(2), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(2), batch_key="k1", lane=Lane.BATCH)
    later = [ItemOutcome("item-0000", OutcomeKind.FAILED, reason="dup")] * 9  # spans two chunks of 7
    moved = ledger.record_outcomes(JOB, PARTITION, "k1", succeeded(["item-0000"]) + later, costs(["item-0000"]))
    assert moved == 1
    assert ledger.get_item(JOB, PARTITION, "item-0000").status == "succeeded"
    totals = ledger.partition_totals(JOB, PARTITION)
    assert (totals.cost_usd, totals.usage, totals.attempts) == (COST[0], USAGE, 1)


def test_retry_keeps_attempts_and_accumulates_cost(ledger):
    """An expired item goes back to pending, is re-submitted on another lane, and carries both attempts' cost."""
    ledger.record_items(JOB, PARTITION, requests(4), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(4), batch_key="k1", lane=Lane.BATCH)
    outcomes = succeeded(ids(2)) + [
        ItemOutcome(c, OutcomeKind.EXPIRED, reason="24h window", usage=USAGE) for c in ids(4)[2:]
    ]
    ledger.record_outcomes(JOB, PARTITION, "k1", outcomes, costs(ids(4)))
    assert ledger.mark_for_retry(JOB, PARTITION, ids(4), lane=Lane.SYNC) == 2  # successes are never retried
    retried = ledger.get_item(JOB, PARTITION, "item-0003")
    assert (retried.status, retried.batch_key, retried.lane, retried.attempts) == ("pending", None, Lane.SYNC, 1)
    assert retried.cost_usd == COST[0]
    assert ledger.assign_items(JOB, PARTITION, ids(4), batch_key="sync-1", lane=Lane.SYNC) == 2
    sync_cost = (Decimal("0.00000075"), Decimal("0.00000075"))
    assert (
        ledger.record_outcomes(
            JOB, PARTITION, "sync-1", succeeded(ids(4)[2:]), costs(ids(4)[2:], sync_cost), lane=Lane.SYNC
        )
        == 2
    )
    done = ledger.get_item(JOB, PARTITION, "item-0003")
    assert (done.status, done.attempts) == ("succeeded", 2)
    assert done.cost_usd == COST[0] + sync_cost[0]
    assert done.usage == USAGE + USAGE
    totals = ledger.partition_totals(JOB, PARTITION)
    assert totals.counts == {"succeeded": 4}
    assert totals.attempts == 6
    assert totals.cost_usd == 4 * COST[0] + 2 * sync_cost[0]


def test_late_outcome_of_a_promoted_item_counts_its_cost_but_not_its_status(ledger):
    """A batch answer for an item already promoted to the sync lane is paid for but does not move the item."""
    ledger.record_items(JOB, PARTITION, requests(3), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(3), batch_key="batch-1", lane=Lane.BATCH)
    assert ledger.promote_items(JOB, PARTITION, ["item-0002"], batch_key="sync-1") == 1
    assert ledger.promote_items(JOB, PARTITION, ["item-0002"], batch_key="sync-1") == 0
    promoted = ledger.get_item(JOB, PARTITION, "item-0002")
    assert (promoted.status, promoted.batch_key, promoted.lane, promoted.attempts) == (
        "submitted",
        "sync-1",
        Lane.SYNC,
        2,
    )
    assert ledger.record_outcomes(JOB, PARTITION, "batch-1", succeeded(ids(3)), costs(ids(3))) == 2
    promoted = ledger.get_item(JOB, PARTITION, "item-0002")
    assert (promoted.status, promoted.batch_key) == ("submitted", "sync-1")
    assert promoted.cost_usd == COST[0]
    assert (
        ledger.record_outcomes(JOB, PARTITION, "sync-1", succeeded(["item-0002"]), costs(["item-0002"]), lane=Lane.SYNC)
        == 1
    )
    totals = ledger.partition_totals(JOB, PARTITION)
    assert totals.counts == {"succeeded": 3}
    assert (totals.attempts, totals.cost_usd) == (4, 4 * COST[0])


def test_money_round_trips_exactly(ledger):
    """Awkward Decimal amounts come back equal, and sums over many attempts are exact."""
    amounts = [
        Decimal("0.000000375"),
        Decimal("123456.789012345678"),
        Decimal("0.1"),
        Decimal("0.2"),
        Decimal("0.000000000001"),
    ]
    custom_ids = ids(len(amounts))
    ledger.record_items(JOB, PARTITION, requests(len(amounts)), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, custom_ids, batch_key="k1", lane=Lane.BATCH)
    money = {c: (amount, amount * 2) for c, amount in zip(custom_ids, amounts)}
    ledger.record_outcomes(JOB, PARTITION, "k1", succeeded(custom_ids), money)
    for custom_id, amount in zip(custom_ids, amounts):
        row = ledger.get_item(JOB, PARTITION, custom_id)
        assert (row.cost_usd, row.sync_equivalent_usd) == (amount, amount * 2)
    totals = ledger.partition_totals(JOB, PARTITION)
    assert totals.cost_usd == sum(amounts) == Decimal("123457.089012720679")
    assert totals.sync_equivalent_usd == 2 * sum(amounts)


def test_money_finer_than_the_ledger_scale_rounds_half_even(ledger):
    """Amounts below 1e-12 USD are rounded half-even (the ledger's documented scale), not truncated or floated."""
    ledger.record_items(JOB, PARTITION, requests(2), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(2), batch_key="k1", lane=Lane.BATCH)
    third = Decimal(1) / Decimal(3)
    money = {"item-0000": (third, Decimal("0.0000000000025")), "item-0001": (Decimal("0.0000000000035"), Decimal(0))}
    ledger.record_outcomes(JOB, PARTITION, "k1", succeeded(ids(2)), money)
    first = ledger.get_item(JOB, PARTITION, "item-0000")
    assert first.cost_usd == Decimal("0.333333333333")
    assert first.sync_equivalent_usd == Decimal("0.000000000002")
    assert ledger.get_item(JOB, PARTITION, "item-0001").cost_usd == Decimal("0.000000000004")


def test_iter_items_pages_in_custom_id_order_with_filters(ledger):
    """iter_items crosses chunk boundaries in order and filters by status and by batch_key."""
    ledger.record_items(JOB, PARTITION, requests(30), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(30)[5:25], batch_key="k1", lane=Lane.BATCH)
    everything = [row.custom_id for row in ledger.iter_items(JOB, PARTITION)]
    assert everything == ids(30)
    pending = [row.custom_id for row in ledger.iter_items(JOB, PARTITION, statuses=["pending"])]
    assert pending == ids(30)[:5] + ids(30)[25:]
    in_batch = [row.custom_id for row in ledger.iter_items(JOB, PARTITION, batch_key="k1")]
    assert in_batch == ids(30)[5:25]
    assert [row.custom_id for row in ledger.items(JOB, PARTITION, statuses=[OutcomeKind.SUCCEEDED])] == []
    assert [row.custom_id for row in ledger.items(JOB, PARTITION, limit=9)] == ids(9)
    with pytest.raises(LedgerError, match="unknown item status"):
        ledger.items(JOB, PARTITION, statuses=["done"])


def test_crash_inside_an_outcome_chunk_rolls_back_and_a_replay_counts_once(ledger):
    """A failure after the attempts are closed but before items move leaves nothing behind; replaying counts once."""
    ledger.record_items(JOB, PARTITION, requests(10), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(10), batch_key="k1", lane=Lane.BATCH)
    seen = []

    def crash_before_items_move(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE bp_items SET (status"):
            seen.append(statement)
            if len(seen) in (1, 3):  # the first chunk of the first call, the second chunk of the next
                raise RuntimeError("killed")

    event.listen(ledger.engine, "before_cursor_execute", crash_before_items_move)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            ledger.record_outcomes(JOB, PARTITION, "k1", succeeded(ids(10)), costs(ids(10)))
        assert ledger.partition_totals(JOB, PARTITION).attempts == 0
        assert ledger.item_counts(JOB, PARTITION) == {"submitted": 10}
        with pytest.raises(RuntimeError, match="killed"):  # dies in the second chunk this time
            ledger.record_outcomes(JOB, PARTITION, "k1", succeeded(ids(10)), costs(ids(10)))
        assert ledger.item_counts(JOB, PARTITION) == {"succeeded": 7, "submitted": 3}
    finally:
        event.remove(ledger.engine, "before_cursor_execute", crash_before_items_move)
    assert ledger.record_outcomes(JOB, PARTITION, "k1", succeeded(ids(10)), costs(ids(10))) == 3
    totals = ledger.partition_totals(JOB, PARTITION)
    assert totals.counts == {"succeeded": 10}
    assert (totals.attempts, totals.cost_usd) == (10, 10 * COST[0])


def test_crash_between_assign_statements_leaves_items_pending(ledger):
    """A failure after items are marked submitted but before their attempts open rolls the chunk back."""
    ledger.record_items(JOB, PARTITION, requests(5), provider=PROVIDER)

    def crash_on_attempt_insert(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO bp_attempts"):
            raise RuntimeError("killed")

    event.listen(ledger.engine, "before_cursor_execute", crash_on_attempt_insert)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            ledger.assign_items(JOB, PARTITION, ids(5), batch_key="k1", lane=Lane.BATCH)
    finally:
        event.remove(ledger.engine, "before_cursor_execute", crash_on_attempt_insert)
    assert ledger.item_counts(JOB, PARTITION) == {"pending": 5}
    assert ledger.assign_items(JOB, PARTITION, ids(5), batch_key="k1", lane=Lane.BATCH) == 5
    assert ledger.partition_totals(JOB, PARTITION).open_attempts == 5


def test_naive_deadline_and_empty_partition_are_refused(ledger, clock):
    """Naive timestamps and empty job/partition names raise clear errors instead of storing guesses."""
    with pytest.raises(LedgerError, match="non-empty"):
        ledger.record_items("", PARTITION, requests(1), provider=PROVIDER)
    clock.now = clock.now.replace(tzinfo=None)
    with pytest.raises(LedgerError, match="naive datetime"):
        ledger.record_items(JOB, PARTITION, requests(1), provider=PROVIDER)
    clock.now = clock.now.replace(tzinfo=UTC) + timedelta(hours=1)
    assert ledger.record_items(JOB, PARTITION, requests(1), provider=PROVIDER) == 1


def test_release_items_gives_back_an_assignment_that_never_ran(ledger):
    """Releasing a refused batch returns its items to pending with the attempt and its open attempt rows removed."""
    ledger.record_items(JOB, PARTITION, requests(10), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(10)[:8], batch_key="refused", lane=Lane.BATCH)
    ledger.assign_items(JOB, PARTITION, ids(10)[8:], batch_key="other", lane=Lane.BATCH)
    assert ledger.release_items(JOB, PARTITION, batch_key="refused") == 8
    assert ledger.release_items(JOB, PARTITION, batch_key="refused") == 0
    released = ledger.get_item(JOB, PARTITION, "item-0000")
    assert (released.status, released.batch_key, released.attempts) == ("pending", None, 0)
    assert ledger.partition_totals(JOB, PARTITION).open_attempts == 2
    assert (
        ledger.assign_items(JOB, PARTITION, ids(10), batch_key="refused", lane=Lane.BATCH) == 8
    )  # the key is free again


def test_attempt_groups_show_lanes_and_paid_twice_answers(ledger):
    """Closed attempts are summed by lane and model; a batch answer for a promoted item shows as superseded."""
    ledger.record_items(JOB, PARTITION, requests(3), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(3), batch_key="batch-1", lane=Lane.BATCH)
    ledger.promote_items(JOB, PARTITION, ["item-0002"], batch_key="sync-1")
    ledger.record_outcomes(JOB, PARTITION, "sync-1", succeeded(["item-0002"]), costs(["item-0002"]), lane=Lane.SYNC)
    ledger.record_outcomes(JOB, PARTITION, "batch-1", succeeded(ids(3)), costs(ids(3)))
    groups = {(g.lane, g.superseded): g for g in ledger.attempt_groups(JOB, PARTITION)}
    assert set(groups) == {(Lane.BATCH, False), (Lane.BATCH, True), (Lane.SYNC, False)}
    assert groups[(Lane.BATCH, False)].attempts == 2
    paid_twice = groups[(Lane.BATCH, True)]
    assert (paid_twice.attempts, paid_twice.cost_usd, paid_twice.usage) == (1, COST[0], USAGE)
    assert groups[(Lane.SYNC, False)].attempts == 1
    assert sum(g.cost_usd for g in groups.values()) == ledger.partition_totals(JOB, PARTITION).cost_usd


def test_iter_items_by_batch_key_prefix(ledger):
    """Items can be read by the prefix of their batch key (the promoted ones), and only those."""
    ledger.record_items(JOB, PARTITION, requests(4), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(4), batch_key="batch-1", lane=Lane.BATCH)
    ledger.promote_items(JOB, PARTITION, ["item-0001", "item-0003"], batch_key="promo-x")
    assert [i.custom_id for i in ledger.iter_items(JOB, PARTITION, batch_key_prefix="promo-")] == [
        "item-0001",
        "item-0003",
    ]
    assert list(ledger.iter_items(JOB, PARTITION, batch_key_prefix="promo_")) == []  # '_' is literal, not a wildcard
