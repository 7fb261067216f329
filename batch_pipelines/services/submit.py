"""Submit one partition's requests as provider batches, idempotently.

Per shard, in this order (``crash_hook(step)`` runs after each step, so tests can crash there):

    intent      the shard's submit intent is in the ledger (key from job, partition, round and
                the shard's fingerprint), before any provider call
    attached?   the ledger knows the batch (intent.vendor_batch_id), or the vendor does: OpenAI
                by the intent key in batch metadata; Anthropic by an unrecorded batch of the
                shard's size created since the intent -> skip to "submitted"
    uploaded    (OpenAI) the shard file is uploaded as ``{intent_key}.jsonl``
    upload_recorded  the file id is in the ledger
    created     the batch exists at the vendor
    submitted   the batch id is on the intent
    recorded    the batch row is in the ledger
    assigned    the shard's items point at the batch (one attempt each)
    cleaned     uploads of this intent that no batch uses are deleted (best effort: a server
                without a file list, or a failed delete, is logged and skipped, never fails
                the submit of a batch that exists)

A retry after a crash at any step re-attaches to the batch already created and never creates a
second one. A queue that is full (429 on create) is waited out by the lane's retry policy and
then met by splitting the shard in halves; items spend no attempt on it (they are assigned only
after a batch exists).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from batch_pipelines.core.batches import BatchInfo
from batch_pipelines.core.errors import InvalidInputError, LedgerError, ProviderError, QueueFullError
from batch_pipelines.core.requests import Lane, LLMRequest
from batch_pipelines.core.shard_rules import ShardLimits
from batch_pipelines.ledger import IntentRow, Ledger
from batch_pipelines.providers.batch_lane import ROUTE_MISSING, response_may_have_created
from batch_pipelines.providers.client import ProviderClient
from batch_pipelines.providers.sharding import Shard, shard_requests, split_shard

log = logging.getLogger(__name__)

CrashHook = Callable[[str], None]

SUBMIT_STEPS = (
    "sharded",
    "intent",
    "uploaded",
    "upload_recorded",
    "created",
    "submitted",
    "recorded",
    "assigned",
    "cleaned",
)
# Vendor and ledger clocks may disagree; look this far before the intent for its batch.
CLOCK_SKEW = timedelta(minutes=10)
MIN_SPLIT_REQUESTS = 2
_RECORD_CHUNK = 5000


def intent_key_for(job: str, partition: str, round: int, fingerprint: str) -> str:
    """Deterministic: the same shard of the same partition and round always has the same key."""
    digest = hashlib.sha256(f"{job}\x00{partition}\x00{round}\x00{fingerprint}".encode()).hexdigest()
    return f"bp-{digest[:40]}"


def _no_hook(step: str) -> None:
    return None


def _recorded_stream(
    ledger: Ledger, requests: Iterable[LLMRequest], *, job: str, partition: str, provider: str
) -> Iterator[LLMRequest]:
    """Pass requests through to the sharder while recording them in the ledger, chunk by chunk."""
    seen: set[str] = set()
    chunk: list[LLMRequest] = []
    for request in requests:
        if request.custom_id in seen:
            raise InvalidInputError(
                f"custom_id {request.custom_id!r} appears twice in partition {partition!r}",
                custom_id=request.custom_id,
                partition=partition,
            )
        seen.add(request.custom_id)
        chunk.append(request)
        if len(chunk) >= _RECORD_CHUNK:
            ledger.record_items(job, partition, chunk, provider=provider)
            chunk = []
        yield request
    if chunk:
        ledger.record_items(job, partition, chunk, provider=provider)


def submit_partition(
    ledger: Ledger,
    client: ProviderClient,
    requests: Iterable[LLMRequest],
    *,
    job: str,
    partition: str,
    work_dir: str | Path,
    round: int = 0,
    crash_hook: CrashHook | None = None,
    max_shard_requests: int | None = None,
) -> list[BatchInfo]:
    """Record, shard and submit ``requests`` on ``client``'s batch lane; one BatchInfo per shard.

    ``max_shard_requests`` shards smaller than the provider's caps: work a full queue refused
    (``token_limit_exceeded``) goes back in pieces the queue can take.
    """
    hook = crash_hook or _no_hook
    config = client.config
    stream = _recorded_stream(ledger, requests, job=job, partition=partition, provider=config.name)
    limits = ShardLimits.from_caps(config.caps)
    if max_shard_requests is not None:
        limits = replace(limits, max_requests=max(1, min(limits.max_requests, max_shard_requests)))
    shards = shard_requests(
        stream,
        limits,
        Path(work_dir) / "shards",
        protocol=config.protocol,
        check_unique_ids=False,  # _recorded_stream already refuses a repeated id in the partition
    )
    hook("sharded")
    submitter = _ShardSubmitter(ledger, client, job=job, partition=partition, round=round, hook=hook)
    infos: list[BatchInfo] = []
    for shard in shards:
        infos.extend(submitter.submit(shard))
    return infos


class _ShardSubmitter:
    def __init__(
        self, ledger: Ledger, client: ProviderClient, *, job: str, partition: str, round: int, hook: CrashHook
    ) -> None:
        self.ledger = ledger
        self.lane = client.batch
        self.provider = client.config.name
        self.job = job
        self.partition = partition
        self.round = round
        self.hook = hook

    def submit(self, shard: Shard) -> list[BatchInfo]:
        pieces = self._pieces_of_earlier_split(shard)
        if pieces is None:
            try:
                return [self._submit_one(shard)]
            except QueueFullError:
                if shard.request_count < 2 * MIN_SPLIT_REQUESTS:
                    raise
                # The queue cannot take this shard whole: try its halves (each its own intent).
                pieces = split_shard(shard, 2)
        infos: list[BatchInfo] = []
        for piece in pieces:
            infos.extend(self.submit(piece))
        return infos

    def _pieces_of_earlier_split(self, shard: Shard) -> list[Shard] | None:
        """The halves an earlier run already submitted this shard as, after a queue refused it whole.

        A resumed submit must go on with those halves: a queue with room again would otherwise take
        the whole shard, and the items its halves already sent would be paid for twice.
        """
        intent = self.ledger.get_intent(intent_key_for(self.job, self.partition, self.round, shard.fingerprint))
        if intent is None or intent.vendor_batch_id or shard.request_count < 2 * MIN_SPLIT_REQUESTS:
            return None
        pieces = split_shard(shard, 2)
        keys = [intent_key_for(self.job, self.partition, self.round, piece.fingerprint) for piece in pieces]
        return pieces if any(self.ledger.get_intent(key) is not None for key in keys) else None

    def _submit_one(self, shard: Shard) -> BatchInfo:
        ledger, lane, hook = self.ledger, self.lane, self.hook
        key = intent_key_for(self.job, self.partition, self.round, shard.fingerprint)
        earlier = ledger.get_intent(key)
        intent = ledger.create_intent(
            key,
            job=self.job,
            partition=self.partition,
            provider=self.provider,
            model=shard.model,
            endpoint=shard.endpoint.value,
            fingerprint=shard.fingerprint,
            item_count=shard.request_count,
            round=self.round,
        )
        hook("intent")
        since = intent.created_at - CLOCK_SKEW
        info = self._existing_batch(intent, shard, resumed=earlier is not None)
        if info is None:
            file_id = intent.file_id
            if lane.uses_files and not file_id:
                file_id = lane.upload(shard, intent_key=key)
                hook("uploaded")
                ledger.mark_intent_uploaded(key, file_id)
                hook("upload_recorded")
            info = self._create(intent, shard, file_id=file_id, since=since)
            hook("created")
            log.info(
                "%s/%s: created %s batch %s with %d request(s)",
                self.job,
                self.partition,
                self.provider,
                info.vendor_batch_id,
                shard.request_count,
            )
        if intent.vendor_batch_id != info.vendor_batch_id:
            ledger.mark_intent_submitted(key, info.vendor_batch_id)
            hook("submitted")
        if info.model is None:
            info = _with_model(info, shard.model)
        if ledger.get_batch(self.provider, info.vendor_batch_id) is None:
            ledger.record_batch(info, intent_key=key, job=self.job, partition=self.partition)
        hook("recorded")
        ledger.assign_items(
            self.job, self.partition, shard.iter_custom_ids(), batch_key=info.vendor_batch_id, lane=Lane.BATCH
        )
        hook("assigned")
        self._clean_orphan_uploads(key, keep=info.input_file_id)
        hook("cleaned")
        return info

    def _create(self, intent: IntentRow, shard: Shard, *, file_id: str | None, since: datetime) -> BatchInfo:
        """Create the shard's batch; after a failed or unanswered create, look for it before asking again.

        Lanes whose batches carry the intent key in metadata do this inside ``create``. For the
        others (Anthropic) a 5xx or a lost answer may still have created the batch, so after the
        policy's wait the ledger and ``find_unrecorded`` are consulted first, and only when no
        batch of the shard's size appeared is the create sent again, within the lane's retry policy.
        """
        lane = self.lane
        started = lane.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                created: BatchInfo = lane.create(
                    shard,
                    intent_key=intent.intent_key,
                    fingerprint=shard.fingerprint,
                    input_file_id=file_id,
                    metadata={"bp_job": self.job[:512], "bp_partition": self.partition[:512]},
                    created_after=since,
                )
                return created
            except QueueFullError:
                raise
            except ProviderError as failure:
                retryable = failure.details.get("retryable", failure.status_code is None)
                if lane.create_reattaches or not response_may_have_created(failure) or not retryable:
                    raise
                delay = lane.retry.next_delay(
                    attempt=attempt,
                    elapsed=lane.clock() - started,
                    hint=failure.details.get("retry_after"),
                    rand=random.random(),
                )
                if delay is None:
                    raise
                log.warning(
                    "create for %s failed (%s); looking for the batch before trying again",
                    intent.intent_key,
                    failure.message,
                )
                lane.sleep(delay)  # give the vendor's list time to show a batch the lost answer made
                found = self._existing_batch(intent, shard, resumed=True)
                if found is not None:
                    return found

    def _clean_orphan_uploads(self, key: str, *, keep: str | None) -> None:
        """Delete stray uploads of an earlier attempt; optional, so a failure is logged and skipped.

        Several OpenAI-compatible servers and gateways have no ``GET /files`` list (404/405) or
        refuse deletes; the batch exists and its items are assigned, so the submit has succeeded.
        """
        try:
            orphans = self.lane.find_orphan_uploads(key, keep=keep)
        except ProviderError as exc:
            log.warning("skipped the clean-up of stray uploads for %s: %s", key, exc.message)
            return
        for file_id in orphans:
            try:
                self.lane.delete_file(file_id)
            except ProviderError as exc:
                log.warning("could not delete stray upload %s of %s: %s", file_id, key, exc.message)

    def _existing_batch(self, intent: IntentRow, shard: Shard, *, resumed: bool) -> BatchInfo | None:
        """The batch an earlier attempt created for this intent, if any (ledger first)."""
        if intent.vendor_batch_id:
            recorded: BatchInfo = self.lane.get(intent.vendor_batch_id)
            return recorded
        if not resumed:
            return None  # a brand-new intent: nothing can exist for it yet
        since = intent.created_at - CLOCK_SKEW
        try:
            found = self.lane.find_by_intent(intent.intent_key, created_after=since)
            if found is not None:
                return found
            # Vendors without batch metadata: an unrecorded batch of the shard's size may be ours.
            unrecorded = self.lane.find_unrecorded(created_after=since, request_count=shard.request_count)
        except ProviderError as exc:
            if exc.status_code not in ROUTE_MISSING:
                raise
            # Creating again could pay twice, and this server cannot say whether it must.
            raise LedgerError(
                f"intent {intent.intent_key} has no recorded batch, and {self.provider!r} has no batch list "
                f"(HTTP {exc.status_code}) to tell whether an earlier attempt created one; refusing to create "
                "another. Look for a batch of this job and partition in the vendor's console.",
                intent_key=intent.intent_key,
                provider=self.provider,
            ) from None
        candidates = [c for c in unrecorded if self.ledger.get_batch(self.provider, c.vendor_batch_id) is None]
        if len(candidates) > 1:
            # Two unrecorded batches of this size: adopting the wrong one, or creating a third,
            # could pay twice. A person has to look.
            raise LedgerError(
                f"intent {intent.intent_key} has no recorded batch and {len(candidates)} unrecorded vendor batches "
                f"of {shard.request_count} requests could be its own; refusing to guess",
                intent_key=intent.intent_key,
                candidates=[c.vendor_batch_id for c in candidates],
            )
        return candidates[0] if candidates else None


def _with_model(info: BatchInfo, model: str) -> BatchInfo:
    from dataclasses import replace

    return replace(info, model=model)
