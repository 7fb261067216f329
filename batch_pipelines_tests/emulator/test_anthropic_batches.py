"""Anthropic Messages and Message Batches, driven with the official SDK in strict mode."""

from __future__ import annotations

import anthropic
import pytest
from anthropic.types import Message
from anthropic.types.messages import DeletedMessageBatch, MessageBatch, MessageBatchIndividualResponse

from batch_pipelines_tests.emulator.helpers import anthropic_client, anthropic_requests, strict

FIXED = {"validation_seconds": 0, "batch_completion_seconds": {"min": 100, "max": 100}, "cancel_seconds": 20}


def raw(emu, batch_id):
    return anthropic_client(emu).messages.batches.with_raw_response.retrieve(batch_id).http_response.json()


def test_message_is_a_full_message_object(emulator):
    """POST /v1/messages answers a Message with text content and usage (standard tier)."""
    client = anthropic_client(emulator)
    response = client.messages.with_raw_response.create(
        model="claude-opus-4-7",
        max_tokens=100,
        system="Labels: cats, dogs",
        messages=[{"role": "user", "content": "my dogs bark"}],
    )
    message = strict(Message, response.http_response.json())
    assert message.content[0].text == "dogs" and message.stop_reason == "end_turn"
    assert message.usage.service_tier == "standard" and message.usage.input_tokens > 0


def test_unknown_model_is_a_404_and_missing_max_tokens_a_400(emulator):
    """Unknown models get not_found_error (404), a request without max_tokens invalid_request_error (400)."""
    client = anthropic_client(emulator)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="claude-nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        client.messages.with_raw_response.create(
            model="claude-opus-4-7", max_tokens=0, messages=[{"role": "user", "content": "x"}]
        )


def test_batch_counts_stay_processing_until_it_ends_then_results_stream(emulator):
    """Counts stay at processing until the end; results are Message objects with service_tier batch."""
    emulator.set_profile(FIXED)
    client = anthropic_client(emulator)
    batch = client.messages.batches.create(requests=anthropic_requests(6))
    strict(MessageBatch, raw(emulator, batch.id))
    emulator.advance(99)
    running = client.messages.batches.retrieve(batch.id)
    assert running.processing_status == "in_progress" and running.request_counts.processing == 6
    assert running.results_url is None
    emulator.advance(1)
    ended = client.messages.batches.retrieve(batch.id)
    strict(MessageBatch, raw(emulator, batch.id))
    assert ended.processing_status == "ended" and ended.request_counts.succeeded == 6
    assert ended.results_url == f"{emulator.base_url}/v1/messages/batches/{batch.id}/results"
    results = list(client.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == [f"q{i}" for i in range(6)]
    for line in client.messages.batches.with_raw_response.results(batch.id).http_response.iter_lines():
        parsed = strict(MessageBatchIndividualResponse, __import__("orjson").loads(line))
        assert parsed.result.type == "succeeded" and parsed.result.message.usage.service_tier == "batch"


def test_unknown_model_inside_a_batch_is_an_errored_result(emulator):
    """A request naming an unknown model errors on its own; the rest of the batch succeeds."""
    client = anthropic_client(emulator)
    requests = anthropic_requests(2) + anthropic_requests(1, model="claude-unknown", prefix="bad")
    batch = client.messages.batches.create(requests=requests)
    emulator.advance(3600)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["bad0"].type == "errored" and results["bad0"].error.error.type == "not_found_error"
    assert results["q0"].type == "succeeded"


@pytest.mark.parametrize(
    "requests",
    [
        [{"custom_id": "has space", "params": anthropic_requests(1)[0]["params"]}],
        [{"custom_id": "x" * 65, "params": anthropic_requests(1)[0]["params"]}],
        anthropic_requests(1) + anthropic_requests(1),
        [{"custom_id": "ok", "params": {"model": "claude-opus-4-7", "messages": [{"role": "user", "content": "x"}]}}],
    ],
)
def test_bad_batch_requests_are_400(emulator, requests):
    """Bad custom_ids, duplicates and params without max_tokens are refused with invalid_request_error."""
    with pytest.raises(anthropic.BadRequestError) as refused:
        anthropic_client(emulator).messages.batches.create(requests=requests)
    assert refused.value.body["error"]["type"] == "invalid_request_error"


def test_cancel_ends_with_canceled_results_for_unfinished_requests(emulator):
    """Cancel: canceling for cancel_seconds, then ended; finished requests succeed, the rest are canceled."""
    emulator.set_profile(FIXED)
    client = anthropic_client(emulator)
    batch = client.messages.batches.create(requests=anthropic_requests(10))
    emulator.advance(40)
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    emulator.advance(20)
    ended = client.messages.batches.retrieve(batch.id)
    strict(MessageBatch, raw(emulator, batch.id))
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (4, 6)
    kinds = sorted(r.result.type for r in client.messages.batches.results(batch.id))
    assert kinds == ["canceled"] * 6 + ["succeeded"] * 4


def test_expiry_marks_unfinished_requests_expired(emulator):
    """A batch that never completes ends at 24 h with expired results for the unfinished share."""
    emulator.set_profile({**FIXED, "never_complete": True, "unfinished_at_expiry": 0.5})
    client = anthropic_client(emulator)
    batch = client.messages.batches.create(requests=anthropic_requests(10))
    emulator.advance(24 * 3600)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at == ended.expires_at
    assert (ended.request_counts.succeeded, ended.request_counts.expired) == (5, 5)


def test_item_errors_are_errored_results_with_the_error_shape(emulator):
    """Injected item errors appear as errored results with an ErrorResponse body."""
    emulator.set_profile({"all_lines_fail": True, "item_error_kinds": {"rate_limited_429": 1}})
    client = anthropic_client(emulator)
    batch = client.messages.batches.create(requests=anthropic_requests(3))
    emulator.advance(3600)
    results = list(client.messages.batches.results(batch.id))
    assert {r.result.error.error.type for r in results} == {"rate_limit_error"}
    assert client.messages.batches.retrieve(batch.id).request_counts.errored == 3


def test_list_pages_newest_first_with_after_and_before(emulator):
    """List is newest first; after_id pages older, before_id pages newer; SDK auto-pagination sees all."""
    client = anthropic_client(emulator)
    ids = [client.messages.batches.create(requests=anthropic_requests(1)).id for _ in range(5)]
    newest_first = ids[::-1]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2] and page.has_more and page.last_id == newest_first[1]
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first
    older = client.messages.batches.list(after_id=newest_first[1], limit=10)
    assert [b.id for b in older.data] == newest_first[2:]
    newer = client.messages.batches.list(before_id=newest_first[3], limit=2)
    assert [b.id for b in newer.data] == newest_first[1:3]


def test_delete_only_after_the_batch_ended(emulator):
    """DELETE of an in-progress batch is a 400; after it ended it is deleted and then 404."""
    client = anthropic_client(emulator)
    batch = client.messages.batches.create(requests=anthropic_requests(1))
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.delete(batch.id)
    emulator.advance(3600)
    deleted = client.messages.batches.with_raw_response.delete(batch.id).http_response.json()
    strict(DeletedMessageBatch, deleted)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)
