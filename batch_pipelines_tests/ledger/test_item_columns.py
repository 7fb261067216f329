"""The set-wise item read: Arrow blocks with exactly what iter_items yields, bounded in size, on both backends."""

from __future__ import annotations

import gc
from datetime import timedelta
from decimal import Decimal

import pyarrow as pa
import pytest

from batch_pipelines.core.errors import LedgerError
from batch_pipelines.core.item_status import ItemStatus
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.requests import Lane
from batch_pipelines.ledger import ITEM_COLUMN_TYPES, ItemRow, Ledger

from .helpers import JOB, PARTITION, PROVIDER, ids, requests, succeeded

# Twelve decimals and a large amount: money must come back to the last digit.
EXACT_COST = (Decimal("123456.789012345678"), Decimal("246913.578024691356"))


def as_columns(rows: list[ItemRow]) -> dict[str, list[object]]:
    """iter_items' rows spelled as read_item_columns' columns."""
    usage_names = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
    columns: dict[str, list[object]] = {name: [] for name in ITEM_COLUMN_TYPES}
    for row in rows:
        for name in ITEM_COLUMN_TYPES:
            if name in usage_names:
                value: object = getattr(row.usage, name)
            elif name in ("endpoint", "lane", "status"):
                value = getattr(row, name).value
            else:
                value = getattr(row, name)
            columns[name].append(value)
    return columns


def read_table(ledger: Ledger, columns, **filters) -> pa.Table:
    blocks = list(ledger.read_item_columns(JOB, PARTITION, columns, **filters))
    schema = pa.schema([(name, ITEM_COLUMN_TYPES[name]) for name in dict.fromkeys(columns)])
    return pa.Table.from_batches(blocks, schema=schema)


@pytest.fixture
def mixed_partition(ledger: Ledger, clock) -> Ledger:
    """23 items: 10 succeeded (exact money), 3 failed, 4 submitted under a promotion key, 6 pending."""
    ledger.record_items(JOB, PARTITION, requests(23), provider=PROVIDER)
    every = ids(23)
    ledger.assign_items(JOB, PARTITION, every[:13], batch_key="batch_1", lane=Lane.BATCH)
    clock.advance(timedelta(minutes=5))
    outcomes = succeeded(every[:10]) + [
        ItemOutcome(custom_id, OutcomeKind.FAILED, reason="over quota", status_code=429, error_code="rate_limit")
        for custom_id in every[10:13]
    ]
    ledger.record_outcomes(JOB, PARTITION, "batch_1", outcomes, dict.fromkeys(every[:10], EXACT_COST))
    ledger.assign_items(JOB, PARTITION, every[13:17], batch_key="promo-1_x", lane=Lane.SYNC)
    return ledger


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"statuses": [ItemStatus.SUCCEEDED, "failed"]},
        {"statuses": [OutcomeKind.FAILED]},
        {"batch_key": "batch_1"},
        {"batch_key_prefix": "promo-"},
        {"statuses": []},
    ],
)
def test_blocks_hold_exactly_what_iter_items_yields(mixed_partition, filters):
    """Every column, every filter: the same items in the same order with the same values, money exact."""
    expected = as_columns(list(mixed_partition.iter_items(JOB, PARTITION, **filters)))
    table = read_table(mixed_partition, list(ITEM_COLUMN_TYPES), block_rows=4, **filters)
    assert table.to_pydict() == expected
    if filters == {}:
        assert table.num_rows == 23
        assert Decimal(str(EXACT_COST[0])) in table.column("cost_usd").to_pylist()


def test_blocks_are_bounded_and_page_the_whole_partition(mixed_partition):
    """No block is larger than block_rows; together they cover the partition once, in custom_id order."""
    blocks = list(mixed_partition.read_item_columns(JOB, PARTITION, ["custom_id"], block_rows=5))
    assert [block.num_rows for block in blocks] == [5, 5, 5, 5, 3]
    assert [cid for block in blocks for cid in block.column("custom_id").to_pylist()] == ids(23)


def test_only_the_columns_asked_for_come_back_even_without_the_page_key(mixed_partition):
    """Asking for batch_key alone pages on custom_id underneath but returns only batch_key."""
    table = read_table(mixed_partition, ["batch_key", "batch_key"], block_rows=3)
    assert table.column_names == ["batch_key"]
    assert table.column("batch_key").to_pylist() == ["batch_1"] * 13 + ["promo-1_x"] * 4 + [None] * 6


def test_a_prefix_is_matched_literally_not_as_a_like_pattern(mixed_partition):
    """Underscores and percent signs in batch_key_prefix match themselves only."""
    assert read_table(mixed_partition, ["custom_id"], batch_key_prefix="promo-1_").num_rows == 4
    assert read_table(mixed_partition, ["custom_id"], batch_key_prefix="promo-1%").num_rows == 0
    assert read_table(mixed_partition, ["custom_id"], batch_key_prefix="promo_").num_rows == 0


def test_an_empty_partition_yields_no_blocks(ledger):
    """A partition with no items reads as nothing, not as an empty block."""
    assert list(ledger.read_item_columns(JOB, "2099-01-01", ["custom_id"])) == []


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["custom_id", "api_key"], r"cannot read item columns \['api_key'\]"),
        ([], r"cannot read item columns \(none\)"),
        ("custom_id", "a sequence of column names"),
    ],
)
def test_bad_column_names_are_refused_before_anything_is_read(ledger, columns, message):
    """An unknown column, no column or a bare string is a LedgerError that lists the readable columns."""
    with pytest.raises(LedgerError, match=message):
        next(ledger.read_item_columns(JOB, PARTITION, columns))


def test_an_unknown_status_is_refused(ledger):
    """A status outside ItemStatus is named in a LedgerError, as iter_items does."""
    with pytest.raises(LedgerError, match="unknown item status 'done'"):
        next(ledger.read_item_columns(JOB, PARTITION, ["custom_id"], statuses=["done"]))


def test_the_cycle_collector_is_held_off_only_while_a_block_is_built(mixed_partition):
    """Between blocks, and after the read, the collector is as the caller left it (on, or off)."""
    blocks = mixed_partition.read_item_columns(JOB, PARTITION, ["custom_id"], block_rows=5)
    next(blocks)
    assert gc.isenabled()
    assert sum(block.num_rows for block in blocks) == 18
    assert gc.isenabled()
    gc.disable()
    try:
        assert sum(b.num_rows for b in mixed_partition.read_item_columns(JOB, PARTITION, ["custom_id"])) == 23
        assert not gc.isenabled()
    finally:
        gc.enable()
