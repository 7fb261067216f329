"""A provider batch as we see it after parsing the vendor's object once, at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batch_pipelines.core.status import BatchStatus

QUEUE_FULL_CODES = frozenset({"token_limit_exceeded"})


@dataclass(frozen=True, slots=True)
class BatchError:
    """One entry of a batch-level error list (OpenAI ``errors.data``)."""

    code: str | None
    message: str | None
    line: int | None = None
    param: str | None = None


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """Vendor-neutral view of one provider batch.

    Counts are ``None`` where the vendor does not report them (Anthropic reports only when the
    batch ends; Gemini never). ``results_url`` is set for Anthropic, file ids for OpenAI.
    """

    provider: str
    vendor_batch_id: str
    status: BatchStatus
    vendor_status: str
    endpoint: str | None = None
    model: str | None = None
    total: int | None = None
    completed: int | None = None
    failed: int | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    results_url: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    errors: tuple[BatchError, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def is_queue_full(self) -> bool:
        """Failed because the vendor's enqueued-token limit was hit: wait or split, no retry spent."""
        return self.status is BatchStatus.FAILED and any(e.code in QUEUE_FULL_CODES for e in self.errors)
