"""What the ledger hands back: frozen rows with typed fields (Decimal money, aware UTC times)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from batch_pipelines.core.batches import BatchError, BatchInfo
from batch_pipelines.core.item_status import TERMINAL_ITEM_STATUSES, ItemStatus
from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Endpoint, Lane
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.core.usage import ZERO_USAGE, Usage


@dataclass(frozen=True, slots=True)
class ItemRow:
    """One item of a partition: where it stands now and what its closed attempts cost.

    ``reason``, ``status_code`` and ``error_code`` are those of the latest outcome; usage and
    money are sums over every closed attempt (a retried item carries the cost of each try).
    """

    job: str
    partition: str
    custom_id: str
    provider: str
    model: str
    endpoint: Endpoint
    lane: Lane
    status: ItemStatus
    attempts: int
    deadline: datetime | None
    batch_key: str | None
    estimated_input_tokens: int | None
    usage: Usage
    cost_usd: Decimal
    sync_equivalent_usd: Decimal
    reason: str | None
    status_code: int | None
    error_code: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_ITEM_STATUSES


@dataclass(frozen=True, slots=True)
class IntentRow:
    """A shard's submission key: created before upload, then uploaded, then submitted."""

    intent_key: str
    job: str
    partition: str
    provider: str
    model: str
    endpoint: str
    fingerprint: str
    item_count: int
    round: int  # 0 for a partition's first submission, 1, 2... for retry rounds
    status: str  # created | uploaded | submitted
    file_id: str | None
    vendor_batch_id: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class BatchRow:
    """A provider batch as last recorded, plus who (if anyone) is reconciling it."""

    provider: str
    vendor_batch_id: str
    job: str
    partition: str
    intent_key: str | None
    status: BatchStatus
    vendor_status: str
    endpoint: str | None
    model: str | None
    total: int | None
    completed: int | None
    failed: int | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    results_url: str | None
    errors: tuple[BatchError, ...]
    metadata: Mapping[str, str]
    created_at: datetime | None
    expires_at: datetime | None
    ended_at: datetime | None
    recorded_at: datetime
    updated_at: datetime
    reconcile_state: str  # none | reconciling | reconciled
    reconcile_worker: str | None
    reconcile_claimed_at: datetime | None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def reconciled(self) -> bool:
        return self.reconcile_state == "reconciled"

    def to_info(self) -> BatchInfo:
        """The vendor-neutral view, as the providers layer would have produced it."""
        return BatchInfo(
            provider=self.provider,
            vendor_batch_id=self.vendor_batch_id,
            status=self.status,
            vendor_status=self.vendor_status,
            endpoint=self.endpoint,
            model=self.model,
            total=self.total,
            completed=self.completed,
            failed=self.failed,
            input_file_id=self.input_file_id,
            output_file_id=self.output_file_id,
            error_file_id=self.error_file_id,
            results_url=self.results_url,
            created_at=self.created_at,
            expires_at=self.expires_at,
            ended_at=self.ended_at,
            metadata=dict(self.metadata),
            errors=self.errors,
        )


@dataclass(frozen=True, slots=True)
class ModelTotals:
    """Usage and money of one model's closed attempts within a partition."""

    model: str
    attempts: int
    usage: Usage
    cost_usd: Decimal
    sync_equivalent_usd: Decimal


@dataclass(frozen=True, slots=True)
class PartitionTotals:
    """Counts of items by status and the exact sums over every closed attempt of a partition."""

    job: str
    partition: str
    item_count: int
    counts: Mapping[ItemStatus, int]
    attempts: int  # closed attempts (each retry is one more)
    open_attempts: int  # assigned to a batch, no outcome recorded yet
    usage: Usage = ZERO_USAGE
    cost_usd: Decimal = Decimal(0)
    sync_equivalent_usd: Decimal = Decimal(0)
    by_model: Mapping[str, ModelTotals] = field(default_factory=dict)

    @property
    def savings_usd(self) -> Decimal:
        return self.sync_equivalent_usd - self.cost_usd

    @property
    def usage_by_model(self) -> dict[str, Usage]:
        return {model: totals.usage for model, totals in self.by_model.items()}

    def count(self, status: ItemStatus | OutcomeKind | str) -> int:
        # ItemStatus is a str enum: a member and its stored value find the same entry.
        key = ItemStatus(status.value) if isinstance(status, OutcomeKind) else status
        return int(self.counts.get(key, 0))  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class AttemptGroup:
    """Closed attempts of a partition grouped by lane and model, split by whether they count.

    ``superseded`` attempts answered successfully for an item that now follows another attempt
    (a promotion raced its batch and both finished): their cost was paid twice and is shown.
    """

    lane: Lane
    model: str
    superseded: bool
    promoted: bool  # run on the sync lane by the deadline watchdog (batch_key starts "promo-")
    attempts: int
    usage: Usage
    cost_usd: Decimal
    sync_equivalent_usd: Decimal


def batch_errors_to_json(errors: tuple[BatchError, ...]) -> list[dict[str, Any]]:
    return [{"code": e.code, "message": e.message, "line": e.line, "param": e.param} for e in errors]


def batch_errors_from_json(raw: list[dict[str, Any]] | None) -> tuple[BatchError, ...]:
    return tuple(BatchError(e.get("code"), e.get("message"), e.get("line"), e.get("param")) for e in raw or ())


@dataclass(frozen=True, slots=True)
class SpendGroup:
    """Attempts closed in a time window, grouped by workload, lane and model and by what the money bought."""

    job: str
    lane: Lane
    model: str
    promoted: bool
    superseded: bool
    retry: bool
    succeeded: bool
    attempts: int
    usage: Usage
    cost_usd: Decimal
    sync_equivalent_usd: Decimal
