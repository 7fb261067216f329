"""The learned turnaround: the ledger's own history of batches, used to flush a group early."""

from __future__ import annotations

from datetime import timedelta

from batch_pipelines.core.turnaround import MIN_BATCHES_FOR_ESTIMATE
from batch_pipelines_tests.router.conftest import chat


def test_turnaround_is_learned_from_past_batches_and_flushes_a_tight_group_early(router, vtime):
    """After 20 batches the flusher knows the model's turnaround, and flushes a 60-minute call at once."""
    provider = router.gateway.registry.provider_for("gpt-5.4-mini").name
    for i in range(MIN_BATCHES_FOR_ESTIMATE):
        if i == MIN_BATCHES_FOR_ESTIMATE - 1:
            assert router.flusher.turnaround(provider, "gpt-5.4-mini") is None  # not enough batches yet
        router.call(chat(i))
        router.flush(everything=True)
        vtime.advance(700)  # the emulator ends every batch within 60-600 virtual seconds
        router.collect()
    learned = router.flusher.turnaround(provider, "gpt-5.4-mini")
    assert learned is not None and learned.batches_seen == MIN_BATCHES_FOR_ESTIMATE
    assert timedelta(seconds=60) <= learned.fastest <= learned.p90 <= timedelta(seconds=700)

    handle = router.call(chat(99), deadline=timedelta(minutes=60))
    report = router.flush()
    assert [f.call_count for f in report.flushes] == [1]
    assert "comfortable" in next(iter(report.reasons.values()))
    assert router.get(handle.id).status == "submitted"


def test_without_history_the_same_call_waits_for_the_age_threshold(router):
    """With no batches seen, a call due in 60 minutes waits for the group's thresholds."""
    router.call(chat(1), deadline=timedelta(minutes=60))
    assert router.flush().flushes == []
