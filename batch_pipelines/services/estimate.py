"""Pre-flight estimates: tokens and dollars before any provider call (labelled as estimates)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from batch_pipelines.core import tokens
from batch_pipelines.core.pricing import NO_DISCOUNTS, Discounts, PriceBook
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.core.usage import Usage

DEFAULT_EXPECTED_OUTPUT_TOKENS = 256


@dataclass
class Estimate:
    """Estimated tokens and cost of a set of requests on the batch lane (and its sync equivalent)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    sync_equivalent_usd: Decimal = Decimal(0)
    per_model: dict[str, Usage] = field(default_factory=lambda: defaultdict(Usage))


def expected_output_tokens(request: LLMRequest, default: int) -> int:
    """What the answer will likely cost: the request's own cap if it sets one, else the default."""
    if request.endpoint is Endpoint.EMBEDDINGS:
        return 0
    body = request.body
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    return min(int(cap), default) if cap else default


def input_tokens(request: LLMRequest, encoding: str | None = None) -> int:
    """Prompt tokens of ``request`` (tools and response format included) in ``encoding``, else its model's."""
    if request.endpoint is Endpoint.EMBEDDINGS:
        return tokens.count_embedding_input(request.body, encoding)
    return tokens.count_chat_prompt(request.body, encoding)


def estimate_requests(
    requests: Iterable[LLMRequest],
    price_book: PriceBook,
    *,
    expected_output: int = DEFAULT_EXPECTED_OUTPUT_TOKENS,
    discounts: Discounts = NO_DISCOUNTS,
    lane: Lane = Lane.BATCH,
    check_model: Callable[[str], None] | None = None,
) -> Estimate:
    """Sum estimated usage per model, then price each model once (exact and fast).

    One pass over ``requests``; ``check_model`` sees each model the first time it appears.
    """
    estimate = Estimate()
    encodings: dict[str, str] = {}
    for request in requests:
        encoding = encodings.get(request.model)
        if encoding is None:
            if check_model is not None:
                check_model(request.model)
            encoding = encodings[request.model] = price_book.encoding(request.model)
        usage = Usage(
            input_tokens=input_tokens(request, encoding),
            output_tokens=expected_output_tokens(request, expected_output),
        )
        estimate.per_model[request.model] = estimate.per_model[request.model] + usage
        estimate.requests += 1
        estimate.input_tokens += usage.input_tokens
        estimate.output_tokens += usage.output_tokens
    for model, usage in estimate.per_model.items():
        breakdown = price_book.cost(model, usage, lane, discounts)
        estimate.cost_usd += breakdown.cost_usd
        estimate.sync_equivalent_usd += breakdown.sync_equivalent_usd
    return estimate
