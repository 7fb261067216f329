"""Recording outcomes: the workload's parser, the price, the ledger and the attempt's Parquet file.

Every lane's outcomes (a collected batch, a sync retry, a promotion) pass through one
``OutcomeRecorder``, so an answer is judged, priced and written the same way wherever it
came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.usage import Usage
from batch_pipelines.ledger import Ledger
from batch_pipelines.results.partition_table import AttemptTableWriter
from batch_pipelines.services.partition_work import ParseResponse, PartitionWork

# Outcomes written to the ledger per transaction.
RECORD_CHUNK = 5000


def charge_unreadable_lines(outcomes: Iterable[ItemOutcome], billed: Usage) -> Iterator[ItemOutcome]:
    """Put usage the vendor billed for lines we could not read onto the first missing item.

    Missing items come after every line of the files was read (``iter_outcomes`` yields them
    last), so by then the readable lines' usage is complete; what the batch's own totals say
    beyond it was billed for lines cut short or unreadable. Recording it on a missing item's
    attempt keeps the ledger's cost equal to the bill, and the item is still retried.
    """
    seen = Usage()
    charged = False
    for outcome in outcomes:
        if outcome.kind is OutcomeKind.MISSING and not charged:
            charged = True
            gap = Usage(
                max(0, billed.input_tokens - seen.input_tokens),
                max(0, billed.cached_input_tokens - seen.cached_input_tokens),
                0,
                max(0, billed.output_tokens - seen.output_tokens),
                max(0, billed.reasoning_tokens - seen.reasoning_tokens),
            )
            if gap.input_tokens or gap.output_tokens:
                outcome = replace(
                    outcome, usage=gap, reason=f"{outcome.reason}; usage billed for unreadable lines recorded here"
                )
        else:
            seen += outcome.usage
        yield outcome


def apply_parser(outcome: ItemOutcome, parse_response: ParseResponse | None) -> tuple[ItemOutcome, Mapping[str, Any]]:
    """A succeeded answer through the workload's parser: its columns, or invalid_output with the reason."""
    if outcome.kind is not OutcomeKind.SUCCEEDED or parse_response is None:
        return outcome, {}
    try:
        return outcome, dict(parse_response(outcome.response))
    except Exception as exc:  # the workload says the answer breaks its contract
        reason = f"{type(exc).__name__}: {exc}"[:500]
        return (
            ItemOutcome(
                outcome.custom_id,
                OutcomeKind.INVALID_OUTPUT,
                reason=reason,
                usage=outcome.usage,
                response=outcome.response,
                status_code=outcome.status_code,
                model=outcome.model,
            ),
            {},
        )


class OutcomeRecorder:
    """Parses, prices and records outcomes into the ledger and an attempt table."""

    def __init__(self, ledger: Ledger, price_book: PriceBook) -> None:
        self.ledger = ledger
        self.price_book = price_book

    def record(
        self,
        work: PartitionWork,
        batch_key: str,
        outcomes: Iterable[ItemOutcome],
        lane: Lane,
        writer: AttemptTableWriter,
        default_model: str | None,
    ) -> None:
        chunk: list[ItemOutcome] = []
        costs: dict[str, tuple[Decimal, Decimal]] = {}

        def flush() -> None:
            if work.hooks.keep_responses is not None:
                work.hooks.keep_responses(batch_key, chunk)
            self.ledger.record_outcomes(work.job, work.partition, batch_key, chunk, costs, lane=lane)
            chunk.clear()
            costs.clear()

        for raw in outcomes:
            outcome, columns = apply_parser(raw, work.hooks.parse_response)
            model = outcome.model or default_model
            if model and (outcome.usage.input_tokens or outcome.usage.output_tokens):
                priced = self.price_book.cost(model, outcome.usage, lane)
                costs[outcome.custom_id] = (priced.cost_usd, priced.sync_equivalent_usd)
            writer.add(outcome, columns, batch_key=batch_key, lane=lane, cost=costs.get(outcome.custom_id))
            chunk.append(outcome)
            if len(chunk) >= RECORD_CHUNK:
                flush()
        if chunk:
            flush()
