"""Item statuses: a closed set whose stored values, terminal set and retryable set are defined once."""

from __future__ import annotations

import pytest

from batch_pipelines.core.item_status import RETRYABLE_ITEM_STATUSES, TERMINAL_ITEM_STATUSES, ItemStatus
from batch_pipelines.core.outcomes import OutcomeKind


@pytest.mark.parametrize(
    ("status", "terminal", "retryable"),
    [
        (ItemStatus.PENDING, False, False),
        (ItemStatus.SUBMITTED, False, False),
        (ItemStatus.SUCCEEDED, True, False),
        (ItemStatus.FAILED, True, True),
        (ItemStatus.INVALID_OUTPUT, True, True),
        (ItemStatus.EXPIRED, True, True),
        (ItemStatus.CANCELLED, True, True),
        (ItemStatus.MISSING, True, True),
    ],
)
def test_terminal_and_retryable_statuses(status, terminal, retryable):
    """Every outcome is terminal; every terminal status but succeeded may be retried."""
    assert status.is_terminal is terminal
    assert status.is_retryable is retryable


def test_every_outcome_kind_is_a_terminal_status_of_the_same_value():
    """The outcome kinds and the terminal statuses are the same values, so an outcome moves an item."""
    assert {kind.value for kind in OutcomeKind} == {status.value for status in TERMINAL_ITEM_STATUSES}
    assert ItemStatus.SUCCEEDED not in RETRYABLE_ITEM_STATUSES


def test_a_status_compares_hashes_and_prints_as_its_stored_value():
    """A str enum: plain strings find it in dicts and sets, and messages show the stored value."""
    assert ItemStatus.PENDING == "pending"
    assert {ItemStatus.SUBMITTED: 3}.get("submitted") == 3
    assert f"{ItemStatus.INVALID_OUTPUT}" == str(ItemStatus.INVALID_OUTPUT) == "invalid_output"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("expired", ItemStatus.EXPIRED),
        (OutcomeKind.MISSING, ItemStatus.MISSING),
        (ItemStatus.PENDING, ItemStatus.PENDING),
    ],
)
def test_of_accepts_the_enum_an_outcome_kind_or_the_stored_string(given, expected):
    """ItemStatus.of names the status from any of the three spellings callers have."""
    assert ItemStatus.of(given) is expected


def test_of_names_an_unknown_status_and_the_known_ones():
    """An unknown status is a ValueError that lists the statuses there are."""
    with pytest.raises(ValueError, match="unknown item status 'done'; statuses are pending, submitted, succeeded"):
        ItemStatus.of("done")
