"""The OpenAI batch lane over real loopback HTTP against the emulator."""

from __future__ import annotations

import pytest

from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.core.shard_rules import ShardLimits
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.providers.client import ProviderClients
from batch_pipelines.providers.config import ProviderRegistry
from batch_pipelines.providers.retry import NO_WAIT
from batch_pipelines.providers.sharding import shard_requests


@pytest.fixture()
def lane(emulator):
    registry = ProviderRegistry.for_emulator(emulator.base_url, api_key=emulator.api_key)
    with ProviderClients(registry, sleep=lambda s: None, retry=NO_WAIT) as clients:
        yield clients.for_model("gpt-5.4-mini").batch


def shard_of(tmp_path, n: int, endpoint: Endpoint = Endpoint.CHAT):
    if endpoint is Endpoint.EMBEDDINGS:
        requests = [
            LLMRequest(f"e-{i}", endpoint, "text-embedding-3-small", {"input": [f"chunk {i}"]}) for i in range(n)
        ]
    else:
        requests = [
            LLMRequest(
                f"c-{i}",
                endpoint,
                "gpt-5.4-mini",
                {"messages": [{"role": "user", "content": f"q {i}"}], "max_tokens": 8},
            )
            for i in range(n)
        ]
    [shard] = shard_requests(requests, ShardLimits(max_requests=1000, max_bytes=10**7), tmp_path / endpoint.name)
    return shard


@pytest.mark.parametrize("endpoint", [Endpoint.CHAT, Endpoint.EMBEDDINGS])
def test_upload_create_poll_and_collect_over_loopback(emulator, lane, tmp_path, endpoint):
    """Upload, create with the intent in metadata, find it by intent, poll it to completion, read every result."""
    shard = shard_of(tmp_path, 12, endpoint)
    file_id = lane.upload(shard, intent_key="bp-one")
    info = lane.create(shard, intent_key="bp-one", fingerprint=shard.fingerprint, input_file_id=file_id)
    assert info.status is BatchStatus.VALIDATING and info.metadata["bp_fingerprint"] == shard.fingerprint
    assert lane.find_by_intent("bp-one").vendor_batch_id == info.vendor_batch_id
    assert lane.find_by_intent("bp-other") is None
    assert lane.find_orphan_uploads("bp-one", keep=file_id) == []
    emulator.advance(3600)
    [done] = lane.poll({info.vendor_batch_id}).values()
    assert done.status is BatchStatus.COMPLETED and done.total == done.completed == 12
    outcomes = list(
        lane.iter_outcomes(lane.download_results(done, tmp_path / "dl"), shard.custom_ids(), model=shard.model)
    )
    assert len(outcomes) == 12 and {o.kind for o in outcomes} == {OutcomeKind.SUCCEEDED}
    assert all(o.usage.input_tokens > 0 for o in outcomes)


def test_cancel_over_loopback_salvages_partial_output(emulator, lane, tmp_path):
    """A cancelled batch ends cancelled; every item is accounted for as succeeded, cancelled or missing."""
    shard = shard_of(tmp_path, 40)
    info = lane.create(
        shard, intent_key="bp-c", fingerprint=shard.fingerprint, input_file_id=lane.upload(shard, intent_key="bp-c")
    )
    emulator.advance(20)
    assert lane.cancel(info.vendor_batch_id).status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    emulator.advance(3600)
    ended = lane.get(info.vendor_batch_id)
    assert ended.status is BatchStatus.CANCELLED
    outcomes = list(lane.iter_outcomes(lane.download_results(ended, tmp_path / "dl"), shard.custom_ids()))
    assert sorted(o.custom_id for o in outcomes) == sorted(shard.custom_ids())


def test_stray_uploads_of_an_intent_are_found_and_deleted(emulator, lane, tmp_path):
    """Two uploads under one intent: the one the batch does not use is an orphan, and deleting it leaves one."""
    shard = shard_of(tmp_path, 3)
    first = lane.upload(shard, intent_key="bp-dup")
    second = lane.upload(shard, intent_key="bp-dup")
    assert lane.find_orphan_uploads("bp-dup", keep=second) == [first]
    lane.delete_file(first)
    lane.delete_file(first)  # already gone: still fine
    assert lane.find_orphan_uploads("bp-dup", keep=second) == []
