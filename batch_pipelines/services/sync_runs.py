"""Running a partition's items on the sync lane now: retries, and promotions past a deadline.

The two kinds differ only in how the ledger takes the items: a retry assigns items that wait
on nothing; a promotion moves items away from a batch still running (their open attempt under
the batch stays, since the batch may still answer and that answer is paid for). The kind is
an explicit value, not a key prefix compared as a string.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import uuid
from collections import defaultdict
from collections.abc import Sequence

from batch_pipelines.core.errors import WorkloadError
from batch_pipelines.core.requests import Lane, LLMRequest
from batch_pipelines.ledger import Ledger
from batch_pipelines.ledger.ledger import PROMOTION_KEY_PREFIX
from batch_pipelines.results.partition_table import AttemptTableWriter
from batch_pipelines.services.partition_work import PartitionWork, WorkDirs
from batch_pipelines.services.recording import OutcomeRecorder
from batch_pipelines.services.routing import ProviderRouter


class SyncRunKind(enum.Enum):
    """Why items run on the sync lane; the value is the prefix of the run's batch key."""

    RETRY = "sync-"
    PROMOTION = PROMOTION_KEY_PREFIX  # the ledger's reports count promoted attempts by this prefix

    @property
    def key_prefix(self) -> str:
        return str(self.value)


class SyncRunner:
    """Sends requests on their providers' sync lanes and records every outcome as one attempt."""

    def __init__(self, ledger: Ledger, router: ProviderRouter, recorder: OutcomeRecorder, dirs: WorkDirs) -> None:
        self.ledger = ledger
        self.router = router
        self.recorder = recorder
        self.dirs = dirs

    def run(self, work: PartitionWork, requests: Sequence[LLMRequest], kind: SyncRunKind) -> None:
        ids = sorted(r.custom_id for r in requests)
        # A fresh key per run: the ledger refuses to reuse one, so a replay cannot double-count.
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        batch_key = f"{kind.key_prefix}{digest}-{uuid.uuid4().hex[:8]}"
        if kind is SyncRunKind.PROMOTION:
            self.ledger.promote_items(work.job, work.partition, ids, batch_key=batch_key, lane=Lane.SYNC)
        else:
            self.ledger.assign_items(work.job, work.partition, ids, batch_key=batch_key, lane=Lane.SYNC)
        by_model: dict[str, list[LLMRequest]] = defaultdict(list)
        for request in requests:
            by_model[request.model].append(request)
        bug: WorkloadError | None = None
        with AttemptTableWriter(self.dirs.attempt_file(work, batch_key), work.hooks.vector_column) as writer:
            # One event loop for the whole run (the lanes' async pools live on it); each model's
            # share is recorded as soon as it is answered, so a crash later keeps what was paid for.
            try:
                asyncio.run(self._run_shares(work, batch_key, by_model, writer))
            except WorkloadError as exc:
                # The parser's bug: the answers paid for are recorded; write their rows, then stop.
                bug = exc
        if bug is not None:
            raise bug

    async def _run_shares(
        self,
        work: PartitionWork,
        batch_key: str,
        by_model: dict[str, list[LLMRequest]],
        writer: AttemptTableWriter,
    ) -> None:
        for model, share in by_model.items():
            outcomes = await self.router.client_for_model(model).sync.run_many(share)
            self.recorder.record(work, batch_key, outcomes, Lane.SYNC, writer, model)
