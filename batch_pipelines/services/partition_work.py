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

from batch_pipelines.core.file_names import safe_file_name
from batch_pipelines.core.outcomes import ItemOutcome
from batch_pipelines.core.requests import LLMRequest

# What an outcome transform does with a succeeded answer: parsed result columns, or
# core.errors.InvalidOutput, which turns the item into invalid_output. Anything else it raises
# is a bug in the workload (WorkloadError): the run stops and nothing is bought again.
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
    """Where a partition's files live: scratch (shards, downloads) and results (attempts, table).

    Job names, partition keys and vendor batch ids come from outside (Dagster accepts a dynamic
    partition key such as ``../escape``; a vendor picks its ids), so each becomes one path
    component through ``safe_file_name`` and nothing can be written outside these two folders.
    """

    work_dir: Path
    results_dir: Path

    def submit(self, work: PartitionWork) -> Path:
        """The first submission's scratch directory (its shards)."""
        return self.work_dir / safe_file_name(work.job) / safe_file_name(work.partition)

    def retry_round(self, work: PartitionWork, round_no: int) -> Path:
        """A retry round's own scratch directory, so its shards never meet the first submission's."""
        return self.submit(work) / f"round-{round_no}"

    def downloads(self, work: PartitionWork, vendor_batch_id: str) -> Path:
        return self.submit(work) / "downloads" / safe_file_name(vendor_batch_id)

    def attempts(self, work: PartitionWork) -> Path:
        return self.results_dir / safe_file_name(work.job) / safe_file_name(work.partition) / "attempts"

    def attempt_file(self, work: PartitionWork, batch_key: str) -> Path:
        """One attempt's Parquet file (a batch id or a sync run's key)."""
        return self.attempts(work) / f"{safe_file_name(batch_key)}.parquet"

    def table(self, work: PartitionWork) -> Path:
        """The partition's result table: ``<results_dir>/<job>/<partition>.parquet``, both names escaped."""
        return self.results_dir / safe_file_name(work.job) / f"{safe_file_name(work.partition)}.parquet"
