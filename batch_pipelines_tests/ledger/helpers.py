"""Small builders shared by the ledger tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.core.usage import Usage

JOB, PARTITION, PROVIDER, MODEL = "classify", "2025-03-01", "openai", "gpt-4o-mini"
DEADLINE = datetime(2025, 3, 2, 6, 30, tzinfo=UTC)
USAGE = Usage(input_tokens=1000, cached_input_tokens=600, cache_write_tokens=100, output_tokens=50, reasoning_tokens=10)
COST = (Decimal("0.000000375"), Decimal("0.00000075"))


def ids(n: int, prefix: str = "item") -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]


def requests(n: int, *, prefix: str = "item", lane: Lane = Lane.BATCH, model: str = MODEL) -> Iterator[LLMRequest]:
    for custom_id in ids(n, prefix):
        yield LLMRequest(
            custom_id,
            Endpoint.CHAT,
            model,
            {"model": model, "messages": [{"role": "user", "content": custom_id}]},
            lane=lane,
            deadline=DEADLINE,
            metadata={"estimated_input_tokens": 42},
        )


def succeeded(custom_ids: list[str], usage: Usage = USAGE) -> list[ItemOutcome]:
    return [
        ItemOutcome(custom_id, OutcomeKind.SUCCEEDED, usage=usage, response={"ok": True}) for custom_id in custom_ids
    ]


def costs(custom_ids: list[str], cost: tuple[Decimal, Decimal] = COST) -> dict[str, tuple[Decimal, Decimal]]:
    return {custom_id: cost for custom_id in custom_ids}
