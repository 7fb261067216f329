"""The Router's Python API over loopback against the emulator: interactive, deferrable, idempotent, refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from batch_pipelines import Router
from batch_pipelines.core.errors import InvalidInputError, UnknownModelError
from batch_pipelines.core.flush import FlushPolicy
from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Lane
from batch_pipelines_tests.router.conftest import chat, make_router, run_until_collected


def test_interactive_call_answers_now_with_body_usage_and_sync_cost(router):
    """An interactive call returns the vendor's chat.completion body, its usage and its sync-lane price."""
    result = router.call(chat(1), lane="interactive")
    assert result.status is OutcomeKind.SUCCEEDED
    assert result.response["object"] == "chat.completion"
    assert result.lane is Lane.SYNC
    assert result.usage.input_tokens > 0
    assert result.cost_usd == router.gateway.price_book.cost("gpt-5.4-mini", result.usage, Lane.SYNC).cost_usd
    assert router.buffer.depth() == (0, None)  # nothing was buffered


def test_acall_answers_interactive_calls_without_blocking(router):
    """The async twin returns the same kind of answer from asyncio code."""
    result = asyncio.run(router.acall(chat(2), lane="interactive"))
    assert result.status is OutcomeKind.SUCCEEDED and result.response["choices"]


def test_deferrable_is_the_default_and_returns_a_queued_handle(router, vtime):
    """A call without a lane is buffered durably and answered with a handle at once."""
    handle = router.call(chat(3), deadline=timedelta(hours=6))
    assert handle.id.startswith("dfr_") and handle.status == "queued"
    assert handle.deadline == vtime.datetime() + timedelta(hours=6)
    assert router.get(handle.id).status == "queued"
    assert router.buffer.depth()[0] == 1


def test_same_key_twice_is_one_call_and_one_handle(router):
    """An idempotency key makes a repeated enqueue return the first call's handle."""
    first = router.call(chat(4), key="order-4")
    again = router.call(chat(4), key="order-4")
    assert again.id == first.id
    assert router.buffer.depth()[0] == 1


def test_same_key_for_another_request_is_refused(router):
    """Reusing a key for a different body is an error naming the key; the first call stays."""
    first = router.call(chat(5), key="order-5")
    with pytest.raises(InvalidInputError, match="order-5"):
        router.call(chat(6), key="order-5")
    assert router.get(first.id).status == "queued"
    assert router.buffer.depth()[0] == 1


@pytest.mark.parametrize(
    ("request_body", "kwargs", "error", "message"),
    [
        ({**chat(0), "model": "no-such-model"}, {}, UnknownModelError, "no-such-model"),
        ({"model": "gpt-5.4-mini", "messages": []}, {}, InvalidInputError, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, {}, InvalidInputError, "model"),
        ({**chat(0), "stream": True}, {}, InvalidInputError, "stream"),
        (
            {"model": "claude-sonnet-4.6", "messages": [{"role": "user", "content": "hi"}]},
            {},
            InvalidInputError,
            "max_tokens",
        ),
        (chat(0), {"deadline": datetime(2026, 12, 1, 12)}, InvalidInputError, "timezone"),
        (chat(0), {"lane": "someday"}, InvalidInputError, "lane"),
        (chat(0), {"key": ""}, InvalidInputError, "idempotency key"),
        (["not", "an", "object"], {}, InvalidInputError, "JSON object"),
    ],
)
def test_bad_input_is_refused_before_anything_is_buffered(router, request_body, kwargs, error, message):
    """Each bad input raises an error naming the problem and leaves the buffer untouched."""
    with pytest.raises(error, match=message):
        router.call(request_body, **kwargs)
    assert router.buffer.depth()[0] == 0


def test_flush_by_age_then_collect_answers_like_the_sync_lane(router, vtime):
    """Calls wait until the age threshold, go out as one batch, and come back as sync-shaped bodies at batch price."""
    handles = [router.call(chat(i)) for i in range(5)]
    assert router.flush().flushes == []
    vtime.advance(14 * 60)
    assert router.flush().flushes == []
    vtime.advance(60)
    report = router.flush()
    assert report.calls == 5 and report.by_lane()[Lane.BATCH] == 5
    assert {router.get(h.id).status for h in handles} == {"submitted"}
    run_until_collected(router, vtime)
    done = router.get_many([h.id for h in handles])
    interactive = router.call(chat(0), lane="interactive").response
    for call in done:
        assert call.status == "succeeded" and call.lane is Lane.BATCH
        assert set(call.response) == set(interactive)
        assert call.cost_usd == router.gateway.price_book.cost("gpt-5.4-mini", call.usage, Lane.BATCH).cost_usd
        assert call.cost_usd > Decimal(0)


def test_flush_by_size(emu, vtime, tmp_path):
    """A group reaching the size threshold flushes at once, in pieces of the threshold; the rest waits."""
    router = make_router(emu, vtime, tmp_path, flush_policy=FlushPolicy(max_calls=10))
    try:
        for i in range(25):
            router.call(chat(i))
        report = router.flush()
        assert [f.call_count for f in report.flushes] == [10, 10]
        assert router.buffer.depth()[0] == 5
    finally:
        router.close()


def test_hopeless_deadline_runs_on_sync_at_once_and_says_so(router, vtime):
    """A deadline even the sync lane cannot meet is served on the sync lane at once, with a warning."""
    handle = router.call(chat(7), deadline=vtime.datetime() - timedelta(minutes=1))
    assert handle.status == "succeeded" and handle.lane is Lane.SYNC
    assert handle.warning is not None and "late" in handle.warning
    assert handle.response["object"] == "chat.completion"


def test_tight_deadline_runs_on_sync_without_warning(router, vtime):
    """A deadline too close for the watchdog to rescue a batch, but fine for sync, runs on sync quietly."""
    handle = router.call(chat(8), deadline=timedelta(minutes=20))
    assert handle.status == "succeeded" and handle.lane is Lane.SYNC and handle.warning is None


def test_wait_returns_when_done_and_times_out_otherwise(router):
    """wait polls until done; for a call still queued it raises TimeoutError after the timeout."""
    ticks = iter(range(100))
    router._monotonic = lambda: float(next(ticks))
    queued = router.call(chat(9))
    with pytest.raises(TimeoutError, match=queued.id):
        router.wait(queued.id, timeout=3)


def test_unknown_id_is_refused(router):
    """get of an id the buffer never saw names it."""
    with pytest.raises(InvalidInputError, match="dfr_nope"):
        router.get("dfr_nope")


def test_router_is_exported_at_the_top_level():
    """from batch_pipelines import Router works."""
    assert Router.__module__ == "batch_pipelines.services.router"


def test_deadline_as_datetime_is_kept(router):
    """An aware datetime deadline is stored as given."""
    due = datetime(2030, 1, 1, tzinfo=UTC)
    assert router.call(chat(10), deadline=due).deadline == due
