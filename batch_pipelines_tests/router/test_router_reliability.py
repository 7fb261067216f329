"""The router under slow batches, crashes and concurrent flushers, over loopback on the emulator's virtual clock."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest

from batch_pipelines.core.flush import FlushPolicy
from batch_pipelines.core.requests import Lane
from batch_pipelines.ledger.deferred import DEFERRED_JOB
from batch_pipelines.services.deferred_flush import DeferredFlusher
from batch_pipelines.services.router import Router
from batch_pipelines_tests.router.conftest import BASE_PROFILE, chat, make_router, run_until_collected


class Crash(Exception):
    """Stands for the flusher's process dying at a step."""


def _crash_at(step: str):
    def hook(reached: str) -> None:
        if reached == step:
            raise Crash(step)

    return hook


def _openai_batches(emu) -> int:
    return int(emu.stats()["batches"]["openai"])


def test_mixed_deadlines_late_batches_are_cancelled_and_promoted_no_deadline_missed(emu, vtime, router):
    """Slow batches: calls due in 2 h are rescued on sync before their deadline; later ones stay on batch."""
    emu.set_profile({**BASE_PROFILE, "batch_completion_seconds": {"min": 4 * 3600, "max": 5 * 3600}})
    soon = [router.call(chat(i), deadline=timedelta(hours=2)) for i in range(10)]
    later = [router.call(chat(100 + i), deadline=timedelta(hours=9)) for i in range(10)]
    free = [router.call(chat(200 + i)) for i in range(10)]
    first = router.flush(everything=True)
    assert first.by_lane() == {Lane.BATCH: 30, Lane.SYNC: 0}
    assert len(first.flushes) == 3  # one batch per deadline band, so a cancel touches only its band
    cancelled: list[str] = []
    paid_twice: dict[str, Decimal] = {}
    for _ in range(12 * 6):
        cancelled += router.watch().cancelled_batches
        paid_twice.update(router.collect().paid_twice_usd)
        if all(c.done for c in router.get_many([h.id for h in soon + later + free])):
            break
        vtime.advance(600)
    handles = router.get_many([h.id for h in soon + later + free])
    assert all(h.status == "succeeded" for h in handles)
    assert len(cancelled) == 1  # only the 2 h band's batch
    found = router.buffer.lookup([h.id for h in soon + later])
    for handle in handles[:20]:
        assert found[handle.id].item.updated_at <= handle.deadline  # answered before its deadline
    assert {h.lane for h in handles[:10]} == {Lane.SYNC}
    assert {h.lane for h in handles[10:]} == {Lane.BATCH}
    # Nothing paid twice beyond what the promotion accounting records: the answers a cancelled
    # batch still delivered for promoted calls are exactly the reported paid-twice amount, and
    # the calls' costs add up to every attempt the ledger holds.
    for flush in first.flushes:
        groups = router.gateway.ledger.attempt_groups(DEFERRED_JOB, flush.flush_id)
        assert sum((g.cost_usd for g in groups if g.superseded), Decimal(0)) == paid_twice[flush.flush_id]
        totals = router.gateway.ledger.partition_totals(DEFERRED_JOB, flush.flush_id)
        assert totals.count("succeeded") == totals.item_count == flush.call_count
        assert totals.cost_usd == sum((g.cost_usd for g in groups), Decimal(0))
    for handle in handles[10:]:  # served by their batch alone: exactly the batch price of their usage
        assert handle.cost_usd == router.gateway.price_book.cost("gpt-5.4-mini", handle.usage, Lane.BATCH).cost_usd


def test_a_crash_between_enqueue_and_flush_loses_nothing(emu, vtime, tmp_path):
    """Calls enqueued by a process that then dies are flushed and answered by the next one."""
    first = make_router(emu, vtime, tmp_path)
    ids = [first.call(chat(i)).id for i in range(6)]
    first.close()  # the process is gone; only the ledger remains
    second = make_router(emu, vtime, tmp_path)
    try:
        assert second.buffer.depth()[0] == 6
        second.flush(everything=True)
        run_until_collected(second, vtime)
        assert [h.status for h in second.get_many(ids)] == ["succeeded"] * 6
    finally:
        second.close()


@pytest.mark.parametrize("step", ["claimed", "sent"])
def test_a_crash_mid_flush_neither_loses_nor_submits_twice(emu, vtime, tmp_path, step):
    """A flusher dying after claiming, or after creating the batch, is taken over after the lease: one batch."""
    policy = FlushPolicy(claim_lease=timedelta(minutes=10))
    dying = make_router(emu, vtime, tmp_path, flush_policy=policy, worker="dying")
    dying.flusher = DeferredFlusher(
        dying.gateway, dying.buffer, flush_policy=policy, worker="dying", crash_hook=_crash_at(step)
    )
    ids = [dying.call(chat(i)).id for i in range(8)]
    before = _openai_batches(emu)
    with pytest.raises(Crash):
        dying.flush(everything=True)
    dying.close()
    assert _openai_batches(emu) - before == (1 if step == "sent" else 0)

    heir = make_router(emu, vtime, tmp_path, flush_policy=policy, worker="heir")
    try:
        assert heir.flush().flushes == []  # the lease has not run out: the claim is respected
        vtime.advance(11 * 60)
        report = heir.flush()
        assert [f.flush_id for f in report.flushes] == report.taken_over
        assert sum(f.call_count for f in report.flushes) == 8
        run_until_collected(heir, vtime)
        assert _openai_batches(emu) - before == 1  # re-attached to the batch, never a second one
        handles = heir.get_many(ids)
        assert [h.status for h in handles] == ["succeeded"] * 8
        flush_id = report.flushes[0].flush_id
        totals = heir.gateway.ledger.partition_totals(DEFERRED_JOB, flush_id)
        assert totals.attempts == 8  # one attempt per call
    finally:
        heir.close()


def test_two_flushers_at_once_on_postgres_claim_each_call_once(emu, vtime, tmp_path, postgres_schema_url):
    """Two flushers racing on one PostgreSQL ledger submit every call exactly once between them."""
    policy = FlushPolicy(max_calls=25)
    a = make_router(emu, vtime, tmp_path / "a", ledger_url=postgres_schema_url, flush_policy=policy, worker="a")
    b = make_router(emu, vtime, tmp_path / "b", ledger_url=postgres_schema_url, flush_policy=policy, worker="b")
    try:
        ids = [a.call(chat(i)).id for i in range(200)]
        before = _openai_batches(emu)
        reports = {}
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def run(name: str, router: Router) -> None:
            try:
                start.wait()
                reports[name] = router.flush(everything=True)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=item) for item in (("a", a), ("b", b))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        flushes = reports["a"].flushes + reports["b"].flushes
        assert sum(f.call_count for f in flushes) == 200
        assert len({f.flush_id for f in flushes}) == len(flushes)
        assert _openai_batches(emu) - before == len(flushes)
        run_until_collected(a, vtime)
        assert {h.status for h in b.get_many(ids)} == {"succeeded"}
        attempts = sum(a.gateway.ledger.partition_totals(DEFERRED_JOB, f.flush_id).attempts for f in flushes)
        assert attempts == 200
    finally:
        a.close()
        b.close()


def test_a_crash_before_a_sync_flush_runs_is_taken_over_and_runs_once(emu, vtime, tmp_path):
    """A call due too soon for a batch whose flusher died before the sync run is run once by the heir."""
    policy = FlushPolicy(claim_lease=timedelta(minutes=10))
    dying = make_router(emu, vtime, tmp_path, flush_policy=policy, worker="dying")
    dying.flusher = DeferredFlusher(
        dying.gateway, dying.buffer, flush_policy=policy, worker="dying", crash_hook=_crash_at("claimed")
    )
    with pytest.raises(Crash):
        dying.call(chat(1), deadline=timedelta(minutes=20), key="tight-1")
    dying.close()
    heir = make_router(emu, vtime, tmp_path, flush_policy=policy, worker="heir")
    try:
        handle = heir.call(chat(1), deadline=timedelta(minutes=20), key="tight-1")  # the caller retries: same call
        assert handle.status == "queued"  # claimed by the dead flusher, not yet sent
        vtime.advance(11 * 60)
        report = heir.flush()
        assert report.by_lane()[Lane.SYNC] == 1 and report.taken_over
        heir.collect()
        done = heir.get(handle.id)
        assert done.status == "succeeded" and done.lane is Lane.SYNC
        totals = heir.gateway.ledger.partition_totals(DEFERRED_JOB, report.flushes[0].flush_id)
        assert totals.attempts == 1  # run once
    finally:
        heir.close()


def test_watchdog_finds_a_batch_that_ended_since_the_last_poll_and_does_not_cancel_it(emu, vtime, router):
    """A batch completed between polls: the cancel the vendor refuses (400) is not an error; its answers are kept."""
    handles = [router.call(chat(300 + i), deadline=timedelta(hours=2)) for i in range(5)]
    assert router.flush(everything=True).by_lane() == {Lane.BATCH: 5, Lane.SYNC: 0}
    vtime.advance(2 * 3600 - 120)  # the batch ended long ago, but nothing polled since it was created
    report = router.watch()
    assert report.cancelled_batches == [] and report.promoted_calls == 0
    router.collect()
    done = router.get_many([h.id for h in handles])
    assert {h.status for h in done} == {"succeeded"} and {h.lane for h in done} == {Lane.BATCH}
