"""The one error tree of batch_pipelines.

    BatchPipelinesError            base of everything we raise on purpose
     ├── ConfigError               broken configuration (price book, provider registry, workload)
     ├── UnknownModelError         a model no price book or provider knows (lists the known ones)
     ├── InvalidInputError         a request or partition that cannot be sent (names the problem)
     ├── BudgetExceededError       the estimated cost breaks the budget; nothing was sent
     ├── InvalidOutput             raised by a workload's parser: the model's answer breaks its contract
     ├── WorkloadError             the workload's own code failed (a bug): the run stops, nothing is re-bought
     ├── ProviderError             the vendor answered with an error we could not retry away
     │    ├── MalformedResponseError  the vendor's payload did not have the documented shape
     │    └── QueueFullError          enqueued-token limit / 429 on create: wait or split, no retry spent
     └── LedgerError               the durable state disagrees with itself

The Dagster layer wraps these in ``dagster.Failure`` subclasses; the core stays framework-free.
Every error carries its evidence in ``details`` (ids, counts, the vendor's message), never a secret.
"""

from __future__ import annotations

from typing import Any


class BatchPipelinesError(Exception):
    """Base class: a message for people plus machine-readable evidence."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(BatchPipelinesError):
    """Configuration that cannot be used as written."""


class UnknownModelError(ConfigError):
    """A model that the price book or the provider registry does not know."""

    def __init__(self, model: str, known: list[str], what: str = "price book") -> None:
        super().__init__(
            f"unknown model {model!r}: the {what} knows {', '.join(sorted(known)) or 'no models'}",
            model=model,
            known=sorted(known),
        )


class InvalidInputError(BatchPipelinesError):
    """Input that cannot be turned into requests (missing columns, empty, oversize...)."""


class BudgetExceededError(BatchPipelinesError):
    """The estimated cost is above the budget; nothing was sent."""


class InvalidOutput(BatchPipelinesError):
    """Raised by a workload's ``parse_response``: the model's answer breaks the output contract.

    The only exception a parser may raise to say "this answer is unusable": the item becomes
    ``invalid_output`` and is asked again (up to ``max_invalid_output_attempts``). Any other
    exception from a parser is a bug in the workload (``WorkloadError``), never paid for again.
    """


class WorkloadError(BatchPipelinesError):
    """The workload's own code raised (a ``KeyError`` in ``parse_response``, say): a bug to fix.

    The run fails with the item and the traceback; nothing is sent again for it. Batch answers
    stay at the vendor and are collected once the code is fixed; sync answers already paid
    for are recorded as ``failed`` (``workload_error``) so their cost is not lost.
    """


class ProviderError(BatchPipelinesError):
    """A vendor error that the retry policy did not (or must not) retry away."""

    def __init__(self, message: str, *, status_code: int | None = None, **details: Any) -> None:
        super().__init__(message, status_code=status_code, **details)
        self.status_code = status_code


class MalformedResponseError(ProviderError):
    """A vendor payload that does not have the documented shape."""


class QueueFullError(ProviderError):
    """The vendor's queue is full (token_limit_exceeded, 429 on create): wait or split."""


class LedgerError(BatchPipelinesError):
    """The ledger's state contradicts itself or the request made of it."""
