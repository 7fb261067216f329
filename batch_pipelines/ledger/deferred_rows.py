"""The deferred buffer's rows as values, and their conversion from and to table rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from batch_pipelines.core.requests import Lane
from batch_pipelines.ledger.rows import ItemRow

# The ledger job under which flushed calls become items; the flush id is their partition.
DEFERRED_JOB = "deferred"
ID_CHUNK = 500


@dataclass(frozen=True, slots=True)
class NewCall:
    """A deferrable call as the caller made it, checked and routed, before it is written."""

    provider: str
    model: str
    endpoint: str
    body: str  # the request body, JSON
    deadline: datetime | None = None
    idempotency_key: str | None = None
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class CallRow:
    call_id: str
    idempotency_key: str | None
    provider: str
    model: str
    endpoint: str
    body: str
    deadline: datetime | None
    state: str
    flush_id: str | None
    warning: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class FlushRow:
    flush_id: str
    provider: str
    model: str
    endpoint: str
    lane: Lane
    state: str
    worker: str
    claimed_at: datetime
    call_count: int
    earliest_deadline: datetime | None
    reason: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CallLookup:
    """A call, the ledger item it became once flushed, and the answer kept for it."""

    call: CallRow
    item: ItemRow | None
    response_body: str | None


def new_call_id() -> str:
    return f"dfr_{uuid.uuid4().hex}"


def chunks(values: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), ID_CHUNK):
        yield list(values[start : start + ID_CHUNK])


def aware(value: datetime) -> datetime:
    """SQLite hands aggregates (MIN) back as naive UTC; rows already come back aware."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def call_row(m: Any) -> CallRow:
    return CallRow(
        call_id=m["call_id"],
        idempotency_key=m["idempotency_key"],
        provider=m["provider"],
        model=m["model"],
        endpoint=m["endpoint"],
        body=m["body"],
        deadline=m["deadline"],
        state=m["state"],
        flush_id=m["flush_id"],
        warning=m["warning"],
        created_at=m["created_at"],
    )


def flush_fields(row: FlushRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in FlushRow.__slots__}


def flush_values(row: FlushRow, now: datetime) -> dict[str, Any]:
    values = flush_fields(row)
    values["lane"] = row.lane.value
    values["updated_at"] = now
    return values


def flush_row(m: Any) -> FlushRow:
    return FlushRow(
        flush_id=m["flush_id"],
        provider=m["provider"],
        model=m["model"],
        endpoint=m["endpoint"],
        lane=Lane(m["lane"]),
        state=m["state"],
        worker=m["worker"],
        claimed_at=m["claimed_at"],
        call_count=m["call_count"],
        earliest_deadline=m["earliest_deadline"],
        reason=m["reason"],
        created_at=m["created_at"],
    )
