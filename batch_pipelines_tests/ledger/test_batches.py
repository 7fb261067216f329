"""Submit intents and provider batches: round trips, idempotency and the reconcile claim."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from batch_pipelines.core.batches import BatchError, BatchInfo
from batch_pipelines.core.errors import LedgerError
from batch_pipelines.core.status import BatchStatus

from .helpers import JOB, MODEL, PARTITION

CREATED = datetime(2025, 3, 1, 12, 0, 5, 123456, tzinfo=UTC)


def intent(ledger, key="intent-1", fingerprint="sha256:aaa", **overrides):
    fields = dict(
        job=JOB,
        partition=PARTITION,
        provider="openai",
        model=MODEL,
        endpoint="/v1/chat/completions",
        fingerprint=fingerprint,
        item_count=100,
    )
    return ledger.create_intent(key, **{**fields, **overrides})


def info(vendor_batch_id="batch_abc", status=BatchStatus.IN_PROGRESS, **overrides) -> BatchInfo:
    fields = dict(
        provider="openai",
        vendor_batch_id=vendor_batch_id,
        status=status,
        vendor_status=status.value,
        endpoint="/v1/chat/completions",
        model=MODEL,
        total=100,
        completed=40,
        failed=2,
        input_file_id="file-in",
        output_file_id=None,
        error_file_id=None,
        results_url=None,
        created_at=CREATED,
        expires_at=CREATED + timedelta(hours=24),
        ended_at=None,
        metadata={"batch_pipelines_intent": "intent-1", "partition": PARTITION},
        errors=(BatchError("token_limit_exceeded", "Enqueued token limit reached", line=None, param=None),),
    )
    return BatchInfo(**{**fields, **overrides})


def test_intent_round_trips_and_is_idempotent(ledger, clock):
    """Creating an intent twice returns the first row; its fields come back as written."""
    first = intent(ledger)
    clock.advance(timedelta(minutes=5))
    again = intent(ledger)
    assert again == first
    assert (first.intent_key, first.job, first.partition, first.provider, first.model) == (
        "intent-1",
        JOB,
        PARTITION,
        "openai",
        MODEL,
    )
    assert (first.endpoint, first.fingerprint, first.item_count, first.status) == (
        "/v1/chat/completions",
        "sha256:aaa",
        100,
        "created",
    )
    assert (first.file_id, first.vendor_batch_id) == (None, None)
    assert first.created_at == clock.now - timedelta(minutes=5) and first.created_at.tzinfo is UTC
    assert ledger.get_intent("intent-1") == first
    assert ledger.get_intent("missing") is None


def test_intent_with_another_fingerprint_is_refused(ledger):
    """An intent key reused for different shard content raises, naming both fingerprints."""
    intent(ledger)
    with pytest.raises(LedgerError, match="sha256:aaa.*sha256:bbb"):
        intent(ledger, fingerprint="sha256:bbb")


def test_intent_moves_through_upload_and_submit(ledger):
    """An intent records its file, then its batch; repeating either with the same id is harmless."""
    intent(ledger)
    intent(ledger, key="intent-2")
    ledger.mark_intent_uploaded("intent-1", "file-1")
    ledger.mark_intent_uploaded("intent-1", "file-2")  # a re-upload before submission replaces the file
    ledger.mark_intent_submitted("intent-1", "batch_abc")
    ledger.mark_intent_submitted("intent-1", "batch_abc")
    ledger.mark_intent_uploaded("intent-1", "file-2")
    row = ledger.get_intent("intent-1")
    assert (row.status, row.file_id, row.vendor_batch_id) == ("submitted", "file-2", "batch_abc")
    intent(ledger, key="intent-3", round=2)
    assert [(i.intent_key, i.round) for i in ledger.intents(JOB, PARTITION)] == [
        ("intent-1", 0),
        ("intent-2", 0),
        ("intent-3", 2),
    ]
    assert ledger.intents(JOB, "other") == []


def test_intent_refuses_a_second_batch_or_file_after_submission(ledger):
    """Attaching a different batch (paying twice) or file to a submitted intent raises; unknown intents raise."""
    intent(ledger)
    ledger.mark_intent_uploaded("intent-1", "file-1")
    ledger.mark_intent_submitted("intent-1", "batch_abc")
    with pytest.raises(LedgerError, match="pay twice"):
        ledger.mark_intent_submitted("intent-1", "batch_other")
    with pytest.raises(LedgerError, match="already submitted"):
        ledger.mark_intent_uploaded("intent-1", "file-9")
    with pytest.raises(LedgerError, match="no submit intent"):
        ledger.mark_intent_uploaded("nope", "file-1")


def test_batch_round_trips_every_field(ledger, clock):
    """A recorded batch comes back with the same vendor view, status enum, errors, metadata and aware times."""
    original = info()
    ledger.record_batch(original, intent_key="intent-1", job=JOB, partition=PARTITION)
    row = ledger.get_batch("openai", "batch_abc")
    assert row.to_info() == original
    assert row.status is BatchStatus.IN_PROGRESS
    assert (row.job, row.partition, row.intent_key) == (JOB, PARTITION, "intent-1")
    assert row.recorded_at == clock.now and row.expires_at.tzinfo is UTC
    assert row.created_at == CREATED  # microseconds survive
    assert (row.reconcile_state, row.reconcile_worker) == ("none", None)
    assert ledger.get_batch("openai", "missing") is None
    assert [b.vendor_batch_id for b in ledger.batches(JOB, PARTITION)] == ["batch_abc"]


def test_record_batch_upserts_and_keeps_the_intent(ledger):
    """Recording a batch again refreshes it and keeps the intent key it was first recorded with."""
    ledger.record_batch(info(), intent_key="intent-1", job=JOB, partition=PARTITION)
    done = info(
        status=BatchStatus.COMPLETED, completed=98, output_file_id="file-out", ended_at=CREATED + timedelta(hours=2)
    )
    ledger.record_batch(done, intent_key=None, job=JOB, partition=PARTITION)
    row = ledger.get_batch("openai", "batch_abc")
    assert (row.status, row.completed, row.output_file_id, row.intent_key) == (
        BatchStatus.COMPLETED,
        98,
        "file-out",
        "intent-1",
    )
    ledger.record_batch(info(), intent_key=None, job=JOB, partition=PARTITION)  # a stale poll
    assert ledger.get_batch("openai", "batch_abc").status is BatchStatus.COMPLETED


def test_update_batches_refreshes_known_batches_only(ledger, clock):
    """update_batches updates known batches, ignores unknown ones and never reopens a terminal batch."""
    ledger.record_batch(info("b1"), intent_key=None, job=JOB, partition=PARTITION)
    ledger.record_batch(info("b2"), intent_key=None, job=JOB, partition=PARTITION)
    ledger.record_batch(info("b3", status=BatchStatus.COMPLETED), intent_key=None, job=JOB, partition=PARTITION)
    clock.advance(timedelta(minutes=1))
    updates = [
        info("b1", status=BatchStatus.FINALIZING, completed=100),
        info("b2", status=BatchStatus.EXPIRED, error_file_id="file-err", ended_at=CREATED + timedelta(hours=24)),
        info("b3", status=BatchStatus.IN_PROGRESS),
        info("unknown"),
    ]
    assert ledger.update_batches(updates) == 2
    b1, b2, b3 = (ledger.get_batch("openai", b) for b in ("b1", "b2", "b3"))
    assert (b1.status, b1.completed, b1.updated_at) == (BatchStatus.FINALIZING, 100, clock.now)
    assert (b2.status, b2.error_file_id, b2.ended_at) == (
        BatchStatus.EXPIRED,
        "file-err",
        CREATED + timedelta(hours=24),
    )
    assert b3.status is BatchStatus.COMPLETED
    assert ledger.get_batch("openai", "unknown") is None
    assert [b.vendor_batch_id for b in ledger.open_batches()] == ["b1"]
    assert ledger.open_batches(provider="anthropic") == []
    assert sorted(b.vendor_batch_id for b in ledger.unreconciled_batches()) == ["b2", "b3"]


def test_reconcile_claim_is_exclusive_and_stale_claims_are_taken_over(ledger, clock):
    """One worker holds a batch's claim; others get False until it is stale; a finished batch is never claimed again."""
    ledger.record_batch(info(status=BatchStatus.COMPLETED), intent_key=None, job=JOB, partition=PARTITION)
    assert ledger.claim_batch_for_reconcile("openai", "batch_abc", worker="w1") is True
    assert ledger.claim_batch_for_reconcile("openai", "batch_abc", worker="w2") is False
    assert ledger.claim_batch_for_reconcile("openai", "batch_abc", worker="w1") is True  # w1 resuming
    clock.advance(timedelta(minutes=31))
    assert ledger.claim_batch_for_reconcile("openai", "batch_abc", worker="w2") is True
    assert ledger.mark_batch_reconciled("openai", "batch_abc", worker="w1") is False  # lost its claim
    assert ledger.mark_batch_reconciled("openai", "batch_abc", worker="w2") is True
    row = ledger.get_batch("openai", "batch_abc")
    assert (row.reconcile_state, row.reconcile_worker) == ("reconciled", "w2")
    clock.advance(timedelta(days=1))
    assert ledger.claim_batch_for_reconcile("openai", "batch_abc", worker="w3") is False
    assert ledger.unreconciled_batches() == []
    with pytest.raises(LedgerError, match="no openai batch"):
        ledger.claim_batch_for_reconcile("openai", "missing", worker="w1")


def test_released_claim_can_be_taken_at_once(ledger):
    """A worker that gives its claim back lets another worker claim without waiting for staleness."""
    ledger.record_batch(info(status=BatchStatus.COMPLETED), intent_key=None, job=JOB, partition=PARTITION)
    assert ledger.claim_batch_for_reconcile("openai", "batch_abc", worker="w1")
    assert ledger.release_batch_claim("openai", "batch_abc", worker="w2") is False
    assert ledger.release_batch_claim("openai", "batch_abc", worker="w1") is True
    assert ledger.claim_batch_for_reconcile("openai", "batch_abc", worker="w2") is True
    assert dataclasses.replace(ledger.get_batch("openai", "batch_abc")).reconcile_worker == "w2"


def test_mark_reconciled_without_a_worker_and_active_partitions(ledger):
    """A batch can be marked reconciled without naming the worker; only partitions with unfinished batches are
    active."""
    ledger.record_batch(info("b1", status=BatchStatus.COMPLETED), intent_key=None, job=JOB, partition="p1")
    ledger.record_batch(info("b2"), intent_key=None, job=JOB, partition="p2")
    ledger.record_batch(info("b3"), intent_key=None, job="other-job", partition="p3")
    assert ledger.active_partitions(JOB) == ["p1", "p2"]
    assert ledger.claim_batch_for_reconcile("openai", "b1", worker="w1")
    assert ledger.mark_batch_reconciled("openai", "b1") is True
    row = ledger.get_batch("openai", "b1")
    assert row.reconciled and row.reconcile_worker == "w1"
    assert ledger.mark_batch_reconciled("openai", "b1") is False
    assert ledger.active_partitions(JOB) == ["p2"]
