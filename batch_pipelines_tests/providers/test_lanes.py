"""The lane contracts: one map of protocol -> lane classes, abstract methods, explicit defaults."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from batch_pipelines.core.batches import BatchInfo
from batch_pipelines.core.errors import ConfigError
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.providers.batch_lane import BatchLane, ResultFiles
from batch_pipelines.providers.config import Protocol, ProviderConfig
from batch_pipelines.providers.lanes import LANES, lanes_for
from batch_pipelines.providers.retry import NO_WAIT
from batch_pipelines.providers.sync_lane import SyncLane


def _config() -> ProviderConfig:
    return ProviderConfig(
        name="vendor", protocol="openai", base_url="https://vendor.test/v1", api_key_env="VENDOR_KEY", api_key="k"
    )


def _info(batch_id: str) -> BatchInfo:
    return BatchInfo(
        provider="vendor", vendor_batch_id=batch_id, status=BatchStatus.IN_PROGRESS, vendor_status="in_progress"
    )


class _MinimalBatchLane(BatchLane):
    """Only the abstract methods: what a protocol without optional capabilities writes."""

    protocol = "openai"

    def create(self, shard, *, intent_key, fingerprint, input_file_id=None, metadata=None, created_after=None):
        return _info("batch-new")

    def get(self, vendor_batch_id: str) -> BatchInfo:
        return _info(vendor_batch_id)

    def cancel(self, vendor_batch_id: str) -> BatchInfo:
        return _info(vendor_batch_id)

    def iter_batches(self, *, created_after=None, max_pages=50) -> Iterator[BatchInfo]:
        return iter([_info("batch-1")])

    def download_results(self, info: BatchInfo, dest_dir) -> ResultFiles:
        return ResultFiles("openai")


def _minimal_lane() -> _MinimalBatchLane:
    http = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(500)))
    return _MinimalBatchLane(_config(), http, NO_WAIT, lambda seconds: None, lambda: 0.0)


def test_every_configurable_protocol_has_both_lanes_speaking_it():
    """Each protocol a provider config accepts maps to a sync and a batch lane declaring that protocol."""
    assert set(LANES) == set(typing.get_args(Protocol))
    for protocol, lanes in LANES.items():
        assert issubclass(lanes.sync, SyncLane) and lanes.sync.protocol == protocol
        assert issubclass(lanes.batch, BatchLane) and lanes.batch.protocol == protocol


def test_an_unknown_protocol_is_a_config_error_naming_the_provider():
    """Looking up lanes for a protocol nobody wrote names the provider and the known protocols."""
    with pytest.raises(ConfigError, match=r"'gemini-test'.*'native'.*anthropic, gemini, openai"):
        lanes_for("native", provider="gemini-test")


def test_a_batch_lane_missing_a_required_method_cannot_be_built():
    """A BatchLane subclass without, say, ``cancel`` fails at construction, not at the first cancel."""

    class NoCancel(BatchLane):
        protocol = "openai"

        def create(self, shard, **kwargs):
            raise AssertionError

        def get(self, vendor_batch_id):
            raise AssertionError

        def iter_batches(self, **kwargs):
            raise AssertionError

        def download_results(self, info, dest_dir):
            raise AssertionError

    with pytest.raises(TypeError, match="cancel"):
        NoCancel(_config(), httpx.Client(), NO_WAIT, lambda seconds: None, lambda: 0.0)


def test_a_sync_lane_missing_a_protocol_hook_cannot_be_built():
    """A SyncLane subclass that does not say how to read usage fails at construction."""

    class NoUsage(SyncLane):
        protocol = "openai"
        endpoints = frozenset()

        def estimate_tokens(self, request):
            return 0

    with pytest.raises(TypeError, match="parse_usage"):
        NoUsage(_config())


def test_optional_capabilities_default_to_doing_nothing_without_calling_the_vendor():
    """A lane with only the required methods uses no files, finds no intent, no unrecorded batch, no orphan
    upload, and reports no batch usage, all without an HTTP call (its transport would answer 500)."""
    lane = _minimal_lane()
    since = datetime(2026, 1, 1, tzinfo=UTC)
    assert lane.uses_files is False
    with pytest.raises(NotImplementedError, match="inline"):
        lane.upload(object(), intent_key="bp-1")  # never asked: submit uploads only when uses_files
    assert lane.find_by_intent("bp-1", created_after=since) is None
    assert lane.find_unrecorded(created_after=since, request_count=3) == []
    assert lane.find_orphan_uploads("bp-1") == []
    assert lane.delete_file("file-1") is None
    assert lane.reported_usage(_info("batch-1")) is None


def test_poll_is_shared_and_built_on_the_required_methods():
    """``poll`` (from the base) finds listed batches in ``iter_batches`` and asks ``get`` for the rest."""
    lane = _minimal_lane()
    found = lane.poll(["batch-1", "batch-2"])
    assert sorted(found) == ["batch-1", "batch-2"]
