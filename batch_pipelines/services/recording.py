"""Recording outcomes: the workload's parser, the price, the ledger and the attempt's Parquet file.

Every lane's outcomes (a collected batch, a sync retry, a promotion) pass through one
``OutcomeRecorder``, so an answer is judged, priced and written the same way wherever it
came from.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from batch_pipelines.core.errors import InvalidOutput, WorkloadError
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


WORKLOAD_ERROR_CODE = "workload_error"


class ParserBug(Exception):
    """Internal: the workload's parser raised something other than InvalidOutput on one item."""

    def __init__(self, outcome: ItemOutcome, error: Exception) -> None:
        super().__init__(outcome.custom_id)
        self.outcome = outcome
        self.error = error


def apply_parser(outcome: ItemOutcome, parse_response: ParseResponse | None) -> tuple[ItemOutcome, Mapping[str, Any]]:
    """A succeeded answer through the workload's parser: its columns, or invalid_output with the reason.

    Only ``InvalidOutput`` means the answer is bad (retried); anything else the parser raises
    is a bug in the workload and comes out as ``ParserBug``, never as a retryable outcome.
    """
    if outcome.kind is not OutcomeKind.SUCCEEDED or parse_response is None:
        return outcome, {}
    try:
        return outcome, dict(parse_response(outcome.response))
    except InvalidOutput as exc:  # the workload says the answer breaks its contract
        reason = f"InvalidOutput: {exc.message}"[:500]
        return replace(outcome, kind=OutcomeKind.INVALID_OUTPUT, reason=reason), {}
    except Exception as exc:
        raise ParserBug(outcome, exc) from exc


def workload_error(work: PartitionWork, bug: ParserBug, *, lane: Lane, affected: int) -> WorkloadError:
    """The error that stops the run: which item, which partition, and the parser's traceback."""
    error = bug.error
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    kept = (
        "the batch's answers stay with the vendor and are collected once the code is fixed"
        if lane is Lane.BATCH
        else f"{affected} paid answer(s) recorded as failed ({WORKLOAD_ERROR_CODE}), not bought again"
    )
    return WorkloadError(
        f"parse_response raised {type(error).__name__}: {error} on item {bug.outcome.custom_id!r} of "
        f"{work.job}/{work.partition}. This is a bug in the workload's code, not a bad answer (raise "
        f"InvalidOutput for those); nothing more was sent: {kept}.",
        custom_id=bug.outcome.custom_id,
        job=work.job,
        partition=work.partition,
        exception=type(error).__name__,
        traceback=trace[-4000:],
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

        first_bug: ParserBug | None = None
        affected = 0
        for raw in outcomes:
            try:
                outcome, columns = apply_parser(raw, work.hooks.parse_response)
            except ParserBug as bug:
                if lane is Lane.BATCH:
                    # Record what came before; the rest stays at the vendor, collected free after the fix.
                    if chunk:
                        flush()
                    raise workload_error(work, bug, lane=lane, affected=0) from bug.error
                # A sync answer exists only here and was paid for: record it as failed, never retried.
                first_bug = first_bug or bug
                affected += 1
                outcome = replace(
                    raw,
                    kind=OutcomeKind.FAILED,
                    reason=f"parse_response raised {type(bug.error).__name__}: {bug.error}"[:500],
                    error_code=WORKLOAD_ERROR_CODE,
                )
                columns = {}
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
        if first_bug is not None:
            raise workload_error(work, first_bug, lane=lane, affected=affected) from first_bug.error
