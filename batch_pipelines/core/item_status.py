"""Where an item of a partition stands: a closed set, with the terminal and retryable sets defined once.

An item is ``pending`` until it is assigned to a batch (or a sync run), ``submitted`` while
that attempt is open, then one of the outcome kinds. A ``str`` enum, so the values stored in
the ledger and comparisons with plain strings keep working.
"""

from __future__ import annotations

import enum

from batch_pipelines.core.outcomes import OutcomeKind


class ItemStatus(str, enum.Enum):
    PENDING = "pending"  # recorded, waiting for a batch or a sync run
    SUBMITTED = "submitted"  # an attempt is open under the item's batch_key
    SUCCEEDED = OutcomeKind.SUCCEEDED.value
    FAILED = OutcomeKind.FAILED.value
    INVALID_OUTPUT = OutcomeKind.INVALID_OUTPUT.value
    EXPIRED = OutcomeKind.EXPIRED.value
    CANCELLED = OutcomeKind.CANCELLED.value
    MISSING = OutcomeKind.MISSING.value

    def __str__(self) -> str:
        # The stored value, as the plain strings this enum replaced printed in messages.
        return self.value

    @classmethod
    def of(cls, status: ItemStatus | OutcomeKind | str) -> ItemStatus:
        """The status named by ``status`` (an ItemStatus, an outcome kind or its string value)."""
        value = status.value if isinstance(status, enum.Enum) else status
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown item status {value!r}; statuses are {known}") from None

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_ITEM_STATUSES

    @property
    def is_retryable(self) -> bool:
        return self in RETRYABLE_ITEM_STATUSES


# Every outcome kind is a terminal status (the kinds and these members share their values).
TERMINAL_ITEM_STATUSES: frozenset[ItemStatus] = frozenset(ItemStatus(kind.value) for kind in OutcomeKind)
# Terminal statuses an item may be sent again from; a success is never retried.
RETRYABLE_ITEM_STATUSES: frozenset[ItemStatus] = TERMINAL_ITEM_STATUSES - {ItemStatus.SUCCEEDED}
