"""Every vendor status value maps to exactly one normalised status; the terminal set is one set."""

import pytest

from batch_pipelines.core.errors import MalformedResponseError
from batch_pipelines.core.status import (
    ANTHROPIC_STATUS,
    GEMINI_STATUS,
    OPENAI_STATUS,
    TERMINAL_STATUSES,
    BatchStatus,
    anthropic_status,
    normalise_status,
)

OPENAI_CASES = [
    ("validating", BatchStatus.VALIDATING, False),
    ("failed", BatchStatus.FAILED, True),
    ("in_progress", BatchStatus.IN_PROGRESS, False),
    ("finalizing", BatchStatus.FINALIZING, False),
    ("completed", BatchStatus.COMPLETED, True),
    ("expired", BatchStatus.EXPIRED, True),
    ("cancelling", BatchStatus.CANCELLING, False),
    ("cancelled", BatchStatus.CANCELLED, True),
]
ANTHROPIC_CASES = [
    ("in_progress", BatchStatus.IN_PROGRESS, False),
    ("canceling", BatchStatus.CANCELLING, False),
    ("ended", BatchStatus.COMPLETED, True),
]
GEMINI_CASES = [
    ("BATCH_STATE_UNSPECIFIED", BatchStatus.VALIDATING, False),
    ("BATCH_STATE_PENDING", BatchStatus.VALIDATING, False),
    ("BATCH_STATE_RUNNING", BatchStatus.IN_PROGRESS, False),
    ("BATCH_STATE_SUCCEEDED", BatchStatus.COMPLETED, True),
    ("BATCH_STATE_FAILED", BatchStatus.FAILED, True),
    ("BATCH_STATE_CANCELLED", BatchStatus.CANCELLED, True),
    ("BATCH_STATE_EXPIRED", BatchStatus.EXPIRED, True),
]
# google-genai and Google's guide spell the same states JOB_STATE_*.
GEMINI_CASES += [(value.replace("BATCH_STATE_", "JOB_STATE_"), *rest) for value, *rest in GEMINI_CASES]


@pytest.mark.parametrize(
    ("vendor", "value", "expected", "terminal"),
    [("openai", *c) for c in OPENAI_CASES]
    + [("anthropic", *c) for c in ANTHROPIC_CASES]
    + [("gemini", *c) for c in GEMINI_CASES],
)
def test_vendor_status_maps_to_normalised_status(vendor, value, expected, terminal):
    """Each documented vendor value maps to its normalised status and terminality."""
    status = normalise_status(vendor, value)
    assert status is expected
    assert status.is_terminal is terminal


@pytest.mark.parametrize(
    ("table", "cases"),
    [(OPENAI_STATUS, OPENAI_CASES), (ANTHROPIC_STATUS, ANTHROPIC_CASES), (GEMINI_STATUS, GEMINI_CASES)],
)
def test_tables_cover_exactly_the_documented_values(table, cases):
    """No vendor table has a value the tests do not cover, nor lacks one they do."""
    assert set(table) == {value for value, _, _ in cases}


def test_terminal_set_is_the_four_end_states():
    """The terminal set is defined once: completed, failed, expired, cancelled."""
    assert TERMINAL_STATUSES == {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
    assert {s for s in BatchStatus if s.is_terminal} == TERMINAL_STATUSES


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "gemini"])
def test_unknown_vendor_status_is_a_clear_error(vendor):
    """A status the vendor never documented raises, naming the value and the known ones."""
    with pytest.raises(MalformedResponseError, match="'paused'.*not one we know"):
        normalise_status(vendor, "paused")


@pytest.mark.parametrize(
    ("processing", "cancel", "counts", "expected"),
    [
        ("in_progress", False, {}, BatchStatus.IN_PROGRESS),
        ("canceling", True, {}, BatchStatus.CANCELLING),
        ("ended", False, {"succeeded": 10}, BatchStatus.COMPLETED),
        ("ended", True, {"succeeded": 3, "canceled": 7}, BatchStatus.CANCELLED),
        ("ended", False, {"succeeded": 3, "expired": 7}, BatchStatus.EXPIRED),
        ("ended", False, {"errored": 10}, BatchStatus.COMPLETED),
    ],
)
def test_anthropic_ended_is_refined_by_the_batch_object(processing, cancel, counts, expected):
    """Anthropic's single 'ended' becomes completed, cancelled or expired from what the batch says."""
    assert anthropic_status(processing, cancel_initiated=cancel, **counts) is expected
