"""Collecting results over loopback: every item gets one outcome, priced, in the ledger and in Parquet."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.ledger import Ledger
from batch_pipelines.providers.client import ProviderClients
from batch_pipelines.providers.config import ProviderRegistry
from batch_pipelines.providers.retry import NO_WAIT
from batch_pipelines.services.results import BatchNotEndedError, collect_results
from batch_pipelines.services.submit import submit_partition

N = 60


def chats(model: str = "gpt-5.4-mini") -> list[LLMRequest]:
    return [LLMRequest(f"c-{i}", Endpoint.CHAT, model, {"messages": [{"role": "user", "content": f"Summarise item {i}"}], "max_tokens": 16}) for i in range(N)]


def messages(model: str = "claude-sonnet-4.6") -> list[LLMRequest]:
    return [LLMRequest(f"m-{i}", Endpoint.MESSAGES, model, {"max_tokens": 16, "messages": [{"role": "user", "content": f"hi {i}"}]}) for i in range(N)]


@pytest.fixture()
def setup(emulator, tmp_path):
    registry = ProviderRegistry.for_emulator(emulator.base_url, api_key=emulator.api_key)
    ledger = Ledger.for_path(tmp_path / "ledger.db")
    with ProviderClients(registry, sleep=lambda s: None, retry=NO_WAIT) as clients:
        yield emulator, clients, ledger
    ledger.close()


def submit_and_end(setup, tmp_path, requests, profile=None):
    emulator, clients, ledger = setup
    if profile:
        emulator.set_profile(profile)
    client = clients.for_model(requests[0].model)
    [info] = submit_partition(ledger, client, requests, job="j", partition="p", work_dir=tmp_path / "w")
    emulator.advance(30 * 3600)
    return client, ledger.get_batch(client.config.name, info.vendor_batch_id)


def test_faulty_batch_accounts_for_every_item_and_prices_the_answers(setup, tmp_path):
    """Item errors, missing and malformed lines: 60 items in, 60 outcomes out, costs from reported usage."""
    client, row = submit_and_end(
        setup, tmp_path, chats(), {"seed": 3, "item_error_rate": 0.2, "missing_line_rate": 0.1, "malformed_output_lines": 2}
    )
    _, _, ledger = setup
    summary = collect_results(ledger, client, row, work_dir=tmp_path / "dl", price_book=PriceBook.default(), parquet_path=tmp_path / "t.parquet")
    assert summary.status is BatchStatus.COMPLETED
    assert summary.outcomes == summary.expected == N == summary.recorded
    assert summary.counts["succeeded"] < N and summary.counts.get("missing", 0) >= 2 and summary.report.malformed == 2
    assert sum(ledger.item_counts("j", "p").values()) == N and "submitted" not in ledger.item_counts("j", "p")
    table = pq.read_table(tmp_path / "t.parquet")
    assert sorted(table.column("custom_id").to_pylist()) == sorted(r.custom_id for r in chats())
    assert summary.cost_usd > 0 and summary.sync_equivalent_usd == 2 * summary.cost_usd  # batch is half price here
    assert ledger.partition_totals("j", "p").cost_usd == summary.cost_usd


def test_collecting_again_records_nothing_new(setup, tmp_path):
    """A replayed collection (crash after recording) changes no item and no cost."""
    client, row = submit_and_end(setup, tmp_path, chats())
    _, _, ledger = setup
    first = collect_results(ledger, client, row, work_dir=tmp_path / "dl", price_book=PriceBook.default())
    again = collect_results(ledger, client, row, work_dir=tmp_path / "dl2", price_book=PriceBook.default())
    assert first.recorded == N and again.recorded == 0
    assert ledger.partition_totals("j", "p").cost_usd == first.cost_usd


def test_expired_batch_keeps_finished_work_and_expires_the_rest(setup, tmp_path):
    """An expired batch: finished lines succeed and are billed, the unfinished ones are expired (retryable)."""
    client, row = submit_and_end(setup, tmp_path, chats(), {"seed": 1, "never_complete": True, "unfinished_at_expiry": 0.5})
    _, _, ledger = setup
    summary = collect_results(ledger, client, row, work_dir=tmp_path / "dl", price_book=PriceBook.default())
    assert summary.status is BatchStatus.EXPIRED
    assert summary.counts.get("succeeded", 0) > 0 and summary.counts.get("expired", 0) > 0
    assert sum(summary.counts.values()) == N and set(summary.counts) <= {"succeeded", "failed", "expired"}


def test_a_broken_download_is_resumed_during_collection(setup, tmp_path):
    """The emulator cuts the output download part-way; collection still reads every line."""
    client, row = submit_and_end(setup, tmp_path, chats(), {"download_drop_after_bytes": 2000})
    _, _, ledger = setup
    summary = collect_results(ledger, client, row, work_dir=tmp_path / "dl", price_book=PriceBook.default())
    assert summary.counts == {"succeeded": N}


def test_token_limit_failure_records_nothing_and_says_queue_full(setup, tmp_path):
    """Over the enqueued-token limit the batch fails validation: no outcome is recorded, items keep their attempt for a resubmit."""
    client, row = submit_and_end(setup, tmp_path, chats(), {"enqueued_token_limits": {"gpt-5.4-mini": 50}})
    _, _, ledger = setup
    summary = collect_results(ledger, client, row, work_dir=tmp_path / "dl", price_book=PriceBook.default())
    assert summary.queue_full and summary.status is BatchStatus.FAILED and summary.recorded == 0
    assert ledger.item_counts("j", "p") == {"submitted": N}


def test_anthropic_results_are_collected_the_same_way(setup, tmp_path):
    """Message batch results: every item once, usage priced, the ledger updated."""
    client, row = submit_and_end(setup, tmp_path, messages(), {"seed": 2, "item_error_rate": 0.1})
    _, _, ledger = setup
    summary = collect_results(ledger, client, row, work_dir=tmp_path / "dl", price_book=PriceBook.default())
    assert summary.recorded == N and summary.counts["succeeded"] + summary.counts.get("failed", 0) == N
    assert summary.cost_usd > 0


def test_a_batch_still_running_has_no_results_yet(setup, tmp_path):
    """Asking too early is a clear error naming the status, and records nothing."""
    emulator, clients, ledger = setup
    client = clients.for_model("gpt-5.4-mini")
    [info] = submit_partition(ledger, client, chats(), job="j", partition="p", work_dir=tmp_path / "w")
    with pytest.raises(BatchNotEndedError, match="validating|in_progress"):
        collect_results(ledger, client, ledger.get_batch(client.config.name, info.vendor_batch_id), work_dir=tmp_path, price_book=PriceBook.default())
