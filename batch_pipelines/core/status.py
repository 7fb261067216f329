"""The batch lifecycle, normalised across vendors.

One closed set of statuses, one table per vendor that maps every value the vendor documents,
and one definition of which statuses are terminal. An unknown vendor value is an error, not a
guess: a vendor adding a status must show up as a clear failure, not a hung partition.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from batch_pipelines.core.errors import MalformedResponseError


class BatchStatus(str, enum.Enum):
    VALIDATING = "validating"  # accepted, input being checked; nothing ran yet
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"  # all lines ran; output files being written
    CANCELLING = "cancelling"
    COMPLETED = "completed"  # ended normally; individual lines may still have failed
    FAILED = "failed"  # the batch as a whole was refused; no line ran
    EXPIRED = "expired"  # the window closed; finished lines are in the output
    CANCELLED = "cancelled"  # cancelled; finished lines are in the output

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[BatchStatus] = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)

OPENAI_STATUS: Mapping[str, BatchStatus] = {
    "validating": BatchStatus.VALIDATING,
    "failed": BatchStatus.FAILED,
    "in_progress": BatchStatus.IN_PROGRESS,
    "finalizing": BatchStatus.FINALIZING,
    "completed": BatchStatus.COMPLETED,
    "expired": BatchStatus.EXPIRED,
    "cancelling": BatchStatus.CANCELLING,
    "cancelled": BatchStatus.CANCELLED,
}

# Anthropic has only three processing statuses; "ended" covers completed, cancelled and
# expired alike. ``anthropic_status`` refines "ended" with what the batch object says.
ANTHROPIC_STATUS: Mapping[str, BatchStatus] = {
    "in_progress": BatchStatus.IN_PROGRESS,
    "canceling": BatchStatus.CANCELLING,
    "ended": BatchStatus.COMPLETED,
}

_GEMINI_BATCH_STATES: Mapping[str, BatchStatus] = {
    "BATCH_STATE_UNSPECIFIED": BatchStatus.VALIDATING,
    "BATCH_STATE_PENDING": BatchStatus.VALIDATING,
    "BATCH_STATE_RUNNING": BatchStatus.IN_PROGRESS,
    "BATCH_STATE_SUCCEEDED": BatchStatus.COMPLETED,
    "BATCH_STATE_FAILED": BatchStatus.FAILED,
    "BATCH_STATE_CANCELLED": BatchStatus.CANCELLED,
    "BATCH_STATE_EXPIRED": BatchStatus.EXPIRED,
}

# google-genai renames BATCH_STATE_* to JOB_STATE_* and Google's guide shows only those: accept both.
GEMINI_STATUS: Mapping[str, BatchStatus] = {
    **_GEMINI_BATCH_STATES,
    **{"JOB_STATE_" + k.removeprefix("BATCH_STATE_"): v for k, v in _GEMINI_BATCH_STATES.items()},
}

VENDOR_TABLES: Mapping[str, Mapping[str, BatchStatus]] = {
    "openai": OPENAI_STATUS,
    "anthropic": ANTHROPIC_STATUS,
    "gemini": GEMINI_STATUS,
}


def normalise_status(vendor: str, value: str) -> BatchStatus:
    """Map a vendor's status string to ours; unknown values raise with the known ones listed."""
    table = VENDOR_TABLES[vendor]
    try:
        return table[value]
    except KeyError:
        raise MalformedResponseError(
            f"{vendor} batch status {value!r} is not one we know ({', '.join(table)})",
            vendor=vendor,
            status=value,
        ) from None


def anthropic_status(
    processing_status: str,
    *,
    cancel_initiated: bool,
    succeeded: int = 0,
    errored: int = 0,
    canceled: int = 0,
    expired: int = 0,
) -> BatchStatus:
    """Anthropic's status refined: an ended batch that was cancelled or ran out of time says so."""
    status = normalise_status("anthropic", processing_status)
    if status is not BatchStatus.COMPLETED:
        return status
    if cancel_initiated:
        return BatchStatus.CANCELLED
    if expired and not canceled:
        return BatchStatus.EXPIRED
    return BatchStatus.COMPLETED
