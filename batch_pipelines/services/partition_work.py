"""The partition's work as one value: which job and partition, and the workload's hooks.

Reconcile, retry rounds, promotion and sync runs all act on one partition with the same
hooks; carrying them together keeps the signatures short and the hooks from drifting apart.
Where on disk a partition's files go is decided once, in ``WorkDirs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batch_pipelines.core.outcomes import ItemOutcome
from batch_pipelines.core.requests import LLMRequest

# What an outcome transform does with a succeeded answer: parsed result columns, or an
# InvalidOutput-style exception that turns the item into invalid_output.
ParseResponse = Callable[[dict[str, Any]], Mapping[str, Any]]
# The partition's requests again, for the given custom_ids (retries and promotions resend them).
RebuildRequests = Callable[[Sequence[str]], list[LLMRequest]]
# Called with (batch_key, outcomes) before the ledger records a chunk of outcomes, so that what
# it keeps (the router's answers to its callers) is durable before the items are terminal.
KeepResponses = Callable[[str, Sequence[ItemOutcome]], None]


@dataclass(frozen=True, slots=True)
class WorkloadHooks:
    """What a workload lends the services: its response parser, its request builder, its vector column,
    and (the router) a keeper of the raw answers."""

    parse_response: ParseResponse | None = None
    rebuild_requests: RebuildRequests | None = None
    vector_column: str | None = None
    keep_responses: KeepResponses | None = None


@dataclass(frozen=True, slots=True)
class PartitionWork:
    """One partition of one job, with the hooks of the workload it belongs to."""

    job: str
    partition: str
    hooks: WorkloadHooks = field(default_factory=WorkloadHooks)


@dataclass(frozen=True, slots=True)
class WorkDirs:
    """Where a partition's files live: scratch (shards, downloads) and results (attempts, table)."""

    work_dir: Path
    results_dir: Path

    def submit(self, work: PartitionWork) -> Path:
        """The first submission's scratch directory (its shards)."""
        return self.work_dir / work.job / work.partition

    def retry_round(self, work: PartitionWork, round_no: int) -> Path:
        """A retry round's own scratch directory, so its shards never meet the first submission's."""
        return self.submit(work) / f"round-{round_no}"

    def downloads(self, work: PartitionWork, vendor_batch_id: str) -> Path:
        return self.work_dir / work.job / work.partition / "downloads" / vendor_batch_id

    def attempts(self, work: PartitionWork) -> Path:
        return self.results_dir / work.job / work.partition / "attempts"

    def table(self, work: PartitionWork) -> Path:
        return self.results_dir / work.job / f"{work.partition}.parquet"
