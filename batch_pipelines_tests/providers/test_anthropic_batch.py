"""The Anthropic batch lane: over loopback against the emulator, and MockTransport edge cases."""

from __future__ import annotations

import httpx
import orjson
import pytest

from batch_pipelines.core.errors import ProviderError, QueueFullError
from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.core.shard_rules import ShardLimits
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.providers.anthropic_batch import AnthropicBatchLane, parse_anthropic_batch
from batch_pipelines.providers.client import ProviderClients
from batch_pipelines.providers.config import ProviderConfig, ProviderRegistry
from batch_pipelines.providers.http import build_http_client
from batch_pipelines.providers.retry import NO_WAIT
from batch_pipelines.providers.sharding import shard_requests

MODEL = "claude-sonnet-4.6"
CONFIG = ProviderConfig(
    name="anthropic-test", protocol="anthropic", base_url="https://vendor.test", api_key_env="UNUSED", api_key="k"
)


def make_shard(tmp_path, n: int = 6):
    requests = [
        LLMRequest(
            f"m-{i}",
            Endpoint.MESSAGES,
            MODEL,
            {"max_tokens": 16, "system": "Be brief.", "messages": [{"role": "user", "content": f"hi {i}"}]},
        )
        for i in range(n)
    ]
    [shard] = shard_requests(
        requests, ShardLimits(max_requests=100, max_bytes=10**6), tmp_path / "shards", protocol="anthropic"
    )
    return shard


@pytest.fixture()
def lane(emulator):
    registry = ProviderRegistry.for_emulator(emulator.base_url, api_key=emulator.api_key)
    with ProviderClients(registry, sleep=lambda s: None, retry=NO_WAIT) as clients:
        yield clients.for_model(MODEL).batch


def test_create_poll_and_results_over_loopback(emulator, lane, tmp_path):
    """The inline requests reach the emulator; after the clock moves, poll sees it ended and every item succeeds."""
    shard = make_shard(tmp_path)
    info = lane.create(shard, intent_key="bp-k", fingerprint=shard.fingerprint)
    assert info.vendor_batch_id.startswith("msgbatch_") and info.status is BatchStatus.IN_PROGRESS and info.total == 6
    assert lane.find_by_intent("bp-k") is None
    emulator.advance(3600)
    [ended] = lane.poll({info.vendor_batch_id}).values()
    assert ended.status is BatchStatus.COMPLETED and ended.completed == 6
    outcomes = list(lane.iter_outcomes(lane.download_results(ended, tmp_path / "dl"), shard.custom_ids(), model=MODEL))
    assert sorted(o.custom_id for o in outcomes) == shard.custom_ids()
    assert {o.kind for o in outcomes} == {OutcomeKind.SUCCEEDED}
    assert all(o.usage.input_tokens > 0 and o.usage.output_tokens > 0 for o in outcomes)


def test_cancel_ends_as_cancelled_with_cancelled_items(emulator, lane, tmp_path):
    """A cancelled batch reads as cancelled once it ends, and unrun items come back cancelled."""
    shard = make_shard(tmp_path)
    info = lane.create(shard, intent_key="bp-k", fingerprint=shard.fingerprint)
    assert lane.cancel(info.vendor_batch_id).status is BatchStatus.CANCELLING
    emulator.advance(3600)
    ended = lane.get(info.vendor_batch_id)
    assert ended.status is BatchStatus.CANCELLED
    kinds = {o.kind for o in lane.iter_outcomes(lane.download_results(ended, tmp_path / "dl"), shard.custom_ids())}
    assert kinds <= {OutcomeKind.CANCELLED, OutcomeKind.SUCCEEDED} and OutcomeKind.CANCELLED in kinds


def test_find_unrecorded_sees_a_batch_the_ledger_never_heard_of(emulator, lane, tmp_path):
    """A batch of the shard's size made since the intent is a candidate, unless its id is already known."""
    shard = make_shard(tmp_path)
    made = lane.create(shard, intent_key="bp-k", fingerprint=shard.fingerprint)
    since = made.created_at.replace(microsecond=0)
    assert [c.vendor_batch_id for c in lane.find_unrecorded(created_after=since, request_count=6)] == [
        made.vendor_batch_id
    ]
    assert lane.find_unrecorded(created_after=since, request_count=5) == []
    assert lane.find_unrecorded(created_after=since, request_count=6, known_ids={made.vendor_batch_id}) == []


def test_a_results_download_cut_mid_stream_resumes(emulator, lane, tmp_path):
    """The emulator drops the first results download part-way; the lane resumes and reads every line."""
    emulator.set_profile({"download_drop_after_bytes": 700})
    shard = make_shard(tmp_path, n=20)
    info = lane.create(shard, intent_key="bp-k", fingerprint=shard.fingerprint)
    emulator.advance(3600)
    files = lane.download_results(lane.get(info.vendor_batch_id), tmp_path / "dl")
    assert files.output.stat().st_size > 700
    assert sorted(
        o.custom_id for o in lane.iter_outcomes(files, shard.custom_ids()) if o.kind is OutcomeKind.SUCCEEDED
    ) == sorted(shard.custom_ids())


def test_429_on_create_is_queue_full_and_5xx_is_a_provider_error(tmp_path):
    """Create is one call: 429 raises QueueFullError, 500 a ProviderError (the caller consults the ledger)."""
    shard = make_shard(tmp_path)
    answers = iter(
        [
            httpx.Response(429, json={"type": "error", "error": {"type": "rate_limit_error", "message": "queue full"}}),
            httpx.Response(500, json={"type": "error", "error": {"type": "api_error", "message": "boom"}}),
        ]
    )
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        return next(answers)

    lane = AnthropicBatchLane(
        CONFIG, build_http_client(CONFIG, transport=httpx.MockTransport(handler)), NO_WAIT, lambda s: None, lambda: 0.0
    )
    with pytest.raises(QueueFullError, match="queue full"):
        lane.create(shard, intent_key="k", fingerprint="f")
    with pytest.raises(ProviderError, match="boom") as failure:
        lane.create(shard, intent_key="k", fingerprint="f")
    assert failure.value.status_code == 500 and len(bodies) == 2
    sent = orjson.loads(bodies[0])
    assert [r["custom_id"] for r in sent["requests"]] == shard.custom_ids()
    assert sent["requests"][0]["params"]["model"] == MODEL


def test_ended_batch_counts_and_expiry_map_to_our_statuses():
    """An ended batch with expired requests and no cancel reads as expired; progress appears only at the end."""
    running = parse_anthropic_batch(
        {
            "id": "msgbatch_1",
            "processing_status": "in_progress",
            "request_counts": {"processing": 4, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": "2026-01-01T00:00:00Z",
        },
        "a",
    )
    assert (running.status, running.total, running.completed) == (BatchStatus.IN_PROGRESS, 4, None)
    ended = parse_anthropic_batch(
        {
            "id": "msgbatch_1",
            "processing_status": "ended",
            "results_url": "https://vendor.test/r",
            "request_counts": {"processing": 0, "succeeded": 3, "errored": 0, "canceled": 0, "expired": 1},
            "ended_at": "2026-01-02T00:00:00Z",
        },
        "a",
    )
    assert (ended.status, ended.completed, ended.failed) == (BatchStatus.EXPIRED, 3, 0)
