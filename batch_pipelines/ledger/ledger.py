"""The ledger: durable state of items, attempts, submit intents and batches, behind one facade.

``Ledger`` opens the database (``database.py``), brings its schema to this release's revision
(``migrations/``) and hands each call to the part that owns it:

- ``items.py``: the item state machine (record, assign, outcomes, release, retry), set-based;
- ``item_reads.py``: items read back, one or a partition in custom_id order;
- ``item_columns.py``: a partition's items as Arrow blocks, set-wise (the results path);
- ``intents.py``: submit intents, the idempotency key written before any provider call;
- ``batches.py``: provider batches as polled, and the claim to reconcile one;
- ``reports.py``: counts and exact sums over a partition.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from os import PathLike
from types import TracebackType
from typing import Any

import pyarrow as pa
from sqlalchemy.engine import Engine

from batch_pipelines.core.batches import BatchInfo
from batch_pipelines.core.item_status import ItemStatus
from batch_pipelines.core.outcomes import ItemOutcome
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.ledger.batches import BatchStore
from batch_pipelines.ledger.database import Database, utcnow
from batch_pipelines.ledger.engine import default_ledger_path, parse_ledger_url, sqlite_url
from batch_pipelines.ledger.intents import IntentStore
from batch_pipelines.ledger.item_columns import DEFAULT_BLOCK_ROWS, ItemColumnReader
from batch_pipelines.ledger.item_reads import ItemReader, StatusLike
from batch_pipelines.ledger.items import ItemStore
from batch_pipelines.ledger.migrations import head_revision, stored_revision, upgrade_in_place
from batch_pipelines.ledger.reports import PROMOTION_KEY_PREFIX, Reports
from batch_pipelines.ledger.rows import AttemptGroup, BatchRow, IntentRow, ItemRow, PartitionTotals, SpendGroup
from batch_pipelines.ledger.schema import RECONCILE_DONE, RECONCILE_NONE

__all__ = ["PROMOTION_KEY_PREFIX", "Ledger"]


class Ledger:
    """Durable state of a batch_pipelines deployment; safe to share between threads.

    ``url`` is ``sqlite:///path`` or ``postgresql+psycopg://...``; ``None`` means the default
    SQLite file (see ``default_ledger_path``). The schema is created, or upgraded in place, on open.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        chunk_size: int = 5000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        parsed = parse_ledger_url(url if url is not None else sqlite_url(default_ledger_path()))
        self._db = Database(parsed, chunk_size=chunk_size, clock=clock or utcnow)
        self.url_for_display: str = self._db.url_for_display
        self.dialect: str = self._db.dialect
        upgrade_in_place(self._db)
        self._items = ItemStore(self._db)
        self._reads = ItemReader(self._db)
        self._columns = ItemColumnReader(self._db)
        self._intents = IntentStore(self._db)
        self._batches = BatchStore(self._db)
        self._reports = Reports(self._db)

    @classmethod
    def for_path(
        cls, path: str | PathLike[str], *, chunk_size: int = 5000, clock: Callable[[], datetime] | None = None
    ) -> Ledger:
        """A ledger in the SQLite file at ``path`` (created with its directory if missing)."""
        return cls(sqlite_url(path), chunk_size=chunk_size, clock=clock)

    @property
    def chunk_size(self) -> int:
        return self._db.chunk_size

    @property
    def clock(self) -> Callable[[], datetime]:
        """The clock the ledger stamps its rows with (injected in tests)."""
        return self._db.clock

    @property
    def database(self) -> Database:
        """The engine and transaction plumbing, for ledger modules beside these (the deferred buffer)."""
        return self._db

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for instrumentation; write through the Ledger's methods)."""
        return self._db.engine

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.url_for_display!r})"

    def schema_revision(self) -> str | None:
        """The Alembic revision the ledger's schema is at (``head_revision()`` once opened)."""
        with self._db.reading() as connection:
            return stored_revision(connection)

    @staticmethod
    def head_revision() -> str:
        """The newest schema revision this release knows."""
        return head_revision()

    # --- items -----------------------------------------------------------------------------

    def record_items(self, job: str, partition: str, requests: Iterable[LLMRequest], *, provider: str) -> int:
        """Add pending items, one per custom_id; ones already recorded are left as they are.

        Streams: a generator of any length is consumed one chunk at a time. Returns how many
        items were new.
        """
        return self._items.record_items(job, partition, requests, provider=provider)

    def assign_items(self, job: str, partition: str, custom_ids: Iterable[str], *, batch_key: str, lane: Lane) -> int:
        """Pending items -> submitted under ``batch_key`` on ``lane``, one more attempt each.

        Replaying the same call changes nothing. Returns how many items moved. ``batch_key``
        must be fresh for each submission: reusing a key an item was already tried under
        raises LedgerError.
        """
        return self._items.assign(job, partition, custom_ids, batch_key, Lane(lane), (ItemStatus.PENDING,))

    def promote_items(
        self, job: str, partition: str, custom_ids: Iterable[str], *, batch_key: str, lane: Lane = Lane.SYNC
    ) -> int:
        """Pending or submitted items -> submitted under a new ``batch_key`` (the deadline path).

        The attempt under the old batch stays open: if that batch still answers, its cost is
        recorded (we were charged) but the item follows the new key.
        """
        return self._items.assign(
            job, partition, custom_ids, batch_key, Lane(lane), (ItemStatus.PENDING, ItemStatus.SUBMITTED)
        )

    def record_outcomes(
        self,
        job: str,
        partition: str,
        batch_key: str,
        outcomes: Iterable[ItemOutcome],
        costs: Mapping[str, tuple[Decimal, Decimal]] | None = None,
        *,
        lane: Lane = Lane.BATCH,
    ) -> int:
        """Close each item's attempt under ``batch_key`` with its outcome, usage and cost.

        ``costs`` maps custom_id -> (cost_usd, sync_equivalent_usd). An attempt is closed once:
        replays, outcomes for items never assigned to ``batch_key`` and a second outcome for
        the same custom_id change nothing. The item moves to the outcome's kind only while it
        is still submitted under ``batch_key``. Returns how many items moved.
        """
        return self._items.record_outcomes(job, partition, batch_key, outcomes, costs, lane)

    def release_items(self, job: str, partition: str, *, batch_key: str) -> int:
        """Undo an assignment that never ran (the batch was refused, e.g. queue full): items
        submitted under ``batch_key`` go back to pending with the attempt given back, and the
        batch's open attempts are deleted (no answer, no cost). Returns items released.
        """
        return self._items.release_items(job, partition, batch_key=batch_key)

    def mark_for_retry(self, job: str, partition: str, custom_ids: Iterable[str], *, lane: Lane | None = None) -> int:
        """Retryable terminal items (any outcome but succeeded) -> pending, optionally on another lane.

        Attempts and accumulated cost stay; the item leaves its batch. Returns items moved.
        """
        return self._items.mark_for_retry(job, partition, custom_ids, lane=lane)

    def get_item(self, job: str, partition: str, custom_id: str) -> ItemRow | None:
        return self._reads.get_item(job, partition, custom_id)

    def items(
        self,
        job: str,
        partition: str,
        *,
        statuses: Iterable[StatusLike] | None = None,
        limit: int | None = None,
        batch_key: str | None = None,
    ) -> list[ItemRow]:
        """Items of a partition in custom_id order, optionally only some statuses, at most ``limit``."""
        rows = self._reads.iter_items(job, partition, statuses=statuses, batch_key=batch_key)
        return list(rows if limit is None else itertools.islice(rows, limit))

    def iter_items(
        self,
        job: str,
        partition: str,
        *,
        statuses: Iterable[StatusLike] | None = None,
        batch_key: str | None = None,
        batch_key_prefix: str | None = None,
    ) -> Iterator[ItemRow]:
        """Items in custom_id order, read one chunk per short query (no transaction held open)."""
        return self._reads.iter_items(
            job, partition, statuses=statuses, batch_key=batch_key, batch_key_prefix=batch_key_prefix
        )

    def read_item_columns(
        self,
        job: str,
        partition: str,
        columns: Sequence[str],
        *,
        statuses: Iterable[StatusLike] | None = None,
        batch_key: str | None = None,
        batch_key_prefix: str | None = None,
        block_rows: int = DEFAULT_BLOCK_ROWS,
    ) -> Iterator[pa.RecordBatch]:
        """The items ``iter_items`` would yield, as Arrow record batches of ``columns``, custom_id order.

        Set-wise: one query per block of at most ``block_rows`` rows on the driver's cursor, no
        ItemRow per item, no transaction held between blocks. Column names are those of
        ``bp_items`` (``ITEM_COLUMN_TYPES``); money is decimal128(24, 12), times timestamp[us, UTC],
        status the stored string. An unknown column is a LedgerError before anything is read.
        """
        return self._columns.read(
            job,
            partition,
            columns,
            statuses=statuses,
            batch_key=batch_key,
            batch_key_prefix=batch_key_prefix,
            block_rows=block_rows,
        )

    # --- reports ---------------------------------------------------------------------------

    def item_counts(self, job: str, partition: str) -> dict[ItemStatus, int]:
        """status -> number of items (statuses with no items are absent)."""
        return self._reports.item_counts(job, partition)

    def partition_totals(self, job: str, partition: str) -> PartitionTotals:
        """Item counts by status and exact sums over the partition's attempts, also per model."""
        return self._reports.partition_totals(job, partition)

    def attempt_groups(self, job: str, partition: str) -> list[AttemptGroup]:
        """Closed attempts summed by (lane, model, superseded): the evidence for promotion costs."""
        return self._reports.attempt_groups(job, partition)

    def attempt_log(self, chunk: int = 65_536) -> Iterator[list[tuple[Any, ...]]]:
        """Closed attempts as traffic-log rows, oldest first, in chunks (see ``Reports.attempt_log``)."""
        return self._reports.attempt_log(chunk)

    def spend_between(self, start: datetime, end: datetime) -> list[SpendGroup]:
        """Attempts closed in ``[start, end)``, summed by job, lane, model and what the money bought."""
        return self._reports.spend_between(start, end)

    def unfinished_in_batches(self, job: str, partition: str, batch_keys: Sequence[str]) -> tuple[int, datetime | None]:
        """How many items still wait on these batches, and the earliest deadline among them."""
        return self._reports.unfinished_in_batches(job, partition, batch_keys)

    # --- submit intents --------------------------------------------------------------------

    def create_intent(
        self,
        intent_key: str,
        *,
        job: str,
        partition: str,
        provider: str,
        model: str,
        endpoint: Endpoint | str,
        fingerprint: str,
        item_count: int,
        round: int = 0,
    ) -> IntentRow:
        """The intent for ``intent_key``, created if new; an existing one must have the same fingerprint."""
        return self._intents.create_intent(
            intent_key,
            job=job,
            partition=partition,
            provider=provider,
            model=model,
            endpoint=endpoint,
            fingerprint=fingerprint,
            item_count=item_count,
            round=round,
        )

    def get_intent(self, intent_key: str) -> IntentRow | None:
        return self._intents.get_intent(intent_key)

    def intents(self, job: str, partition: str) -> list[IntentRow]:
        return self._intents.intents(job, partition)

    def mark_intent_uploaded(self, intent_key: str, file_id: str) -> None:
        """Record the uploaded input file; a re-upload before submission replaces it."""
        self._intents.mark_intent_uploaded(intent_key, file_id)

    def mark_intent_submitted(self, intent_key: str, vendor_batch_id: str) -> None:
        """Record the batch created for this intent; a different batch id for it is an error (paying twice)."""
        self._intents.mark_intent_submitted(intent_key, vendor_batch_id)

    # --- batches ---------------------------------------------------------------------------

    def record_batch(self, info: BatchInfo, *, intent_key: str | None, job: str, partition: str) -> None:
        """Insert or refresh a batch by (provider, vendor_batch_id).

        A terminal status is never overwritten by a non-terminal one (a stale poll).
        """
        self._batches.record_batch(info, intent_key=intent_key, job=job, partition=partition)

    def update_batches(self, infos: Iterable[BatchInfo]) -> int:
        """Refresh status, counts, file ids and times of known batches in one statement per chunk.

        Unknown batches are ignored, and so is a non-terminal status for a batch already
        terminal. Returns how many batches were updated.
        """
        return self._batches.update_batches(infos)

    def get_batch(self, provider: str, vendor_batch_id: str) -> BatchRow | None:
        return self._batches.get_batch(provider, vendor_batch_id)

    def batches(self, job: str, partition: str) -> list[BatchRow]:
        return self._batches.batches(job, partition)

    def open_batches(self, provider: str | None = None) -> list[BatchRow]:
        """Batches whose last recorded status is not terminal (what a poller must look at)."""
        return self._batches.open_batches(provider)

    def unreconciled_batches(self, provider: str | None = None) -> list[BatchRow]:
        """Terminal batches whose results have not been reconciled yet."""
        return self._batches.unreconciled_batches(provider)

    def active_partitions(self, job: str, *, reconciled_since: datetime | None = None) -> list[str]:
        """Partitions of ``job`` with a batch still running or not yet reconciled, in order.

        With ``reconciled_since``, also those with a batch reconciled since then: a results run
        that died after collecting may have left their items waiting on no batch.
        """
        return self._batches.active_partitions(job, reconciled_since=reconciled_since)

    def claim_batch_for_reconcile(
        self,
        provider: str,
        vendor_batch_id: str,
        *,
        worker: str,
        stale_after: timedelta = timedelta(minutes=30),
        now: datetime | None = None,
    ) -> bool:
        """Take the right to reconcile a batch: True for this worker, False if another holds it.

        A claim older than ``stale_after`` is presumed dead and can be taken over; the same
        worker claiming again gets True. A reconciled batch is never claimed again.
        """
        return self._batches.claim_batch_for_reconcile(
            provider, vendor_batch_id, worker=worker, stale_after=stale_after, now=now
        )

    def mark_batch_reconciled(self, provider: str, vendor_batch_id: str, *, worker: str | None = None) -> bool:
        """Finish this worker's claim; False if the claim was lost to another worker meanwhile.

        Without ``worker`` the batch is marked reconciled whoever holds it (single-worker use).
        """
        return self._batches.end_claim(provider, vendor_batch_id, worker, RECONCILE_DONE)

    def release_batch_claim(self, provider: str, vendor_batch_id: str, *, worker: str) -> bool:
        """Give a claim back unfinished (reconcile failed), so another worker may take it now."""
        return self._batches.end_claim(provider, vendor_batch_id, worker, RECONCILE_NONE)
