"""How one item ended: exactly one terminal outcome per submitted custom_id."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from batch_pipelines.core.usage import ZERO_USAGE, Usage


class OutcomeKind(str, enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the provider refused or errored; reason holds its message
    INVALID_OUTPUT = "invalid_output"  # the call worked but the answer broke the contract
    EXPIRED = "expired"  # the batch window closed before the item ran
    CANCELLED = "cancelled"  # the batch was cancelled before the item ran
    MISSING = "missing"  # the batch ended and said nothing about the item


# Outcomes that may succeed if asked again. FAILED is retryable only for transient
# statuses (429/5xx inside a batch line); see ``is_retryable``.
_RETRYABLE_KINDS = frozenset({OutcomeKind.EXPIRED, OutcomeKind.CANCELLED, OutcomeKind.MISSING})
_TRANSIENT_STATUS = frozenset({408, 409, 429})
# Failures with no HTTP status that asking again can fix: the vendor was not reached.
TRANSIENT_ERROR_CODES = frozenset({"connection_error", "timeout"})


def is_transient_failure(status_code: int | None, error_code: str | None) -> bool:
    """A 408/409/429/5xx answer, or no answer at all, may go differently next time; a 4xx will not."""
    if status_code is None:
        return error_code in TRANSIENT_ERROR_CODES
    return status_code in _TRANSIENT_STATUS or status_code >= 500


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """The provider's answer for one custom_id, parsed at the edge into plain values."""

    custom_id: str
    kind: OutcomeKind
    reason: str | None = None
    usage: Usage = ZERO_USAGE
    response: Any = None  # the vendor's response body for succeeded items (parsed JSON)
    status_code: int | None = None
    error_code: str | None = None
    model: str | None = None

    @property
    def is_retryable(self) -> bool:
        """Whether asking again could change the answer (invalid_output is decided by policy)."""
        if self.kind in _RETRYABLE_KINDS:
            return True
        if self.kind is OutcomeKind.FAILED:
            return is_transient_failure(self.status_code, self.error_code)
        return False
