"""Idempotent submit: a crash at every step, then a retry, never makes a second batch."""

from __future__ import annotations

import itertools

import httpx
import orjson
import pytest

from batch_pipelines.core.errors import InvalidInputError, QueueFullError
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.ledger import Ledger
from batch_pipelines.providers.client import ProviderClients, build_client
from batch_pipelines.providers.config import BatchCaps, ProviderConfig, ProviderRegistry
from batch_pipelines.providers.retry import NO_WAIT
from batch_pipelines.services.submit import SUBMIT_STEPS, submit_partition

ITEMS = 8
CAPS = BatchCaps(max_requests=5, max_bytes=1_000_000)  # 8 items -> two shards (5 + 3)
OPENAI_STEPS = [s for s in SUBMIT_STEPS]
ANTHROPIC_STEPS = [s for s in SUBMIT_STEPS if s not in ("uploaded", "upload_recorded")]


class Crash(Exception):
    """The process dies here."""


def requests_for(model: str) -> list[LLMRequest]:
    if model.startswith("claude"):
        return [
            LLMRequest(
                f"m-{i}",
                Endpoint.MESSAGES,
                model,
                {"max_tokens": 16, "messages": [{"role": "user", "content": f"hi {i}"}]},
            )
            for i in range(ITEMS)
        ]
    return [
        LLMRequest(
            f"c-{i}", Endpoint.CHAT, model, {"messages": [{"role": "user", "content": f"hi {i}"}], "max_tokens": 16}
        )
        for i in range(ITEMS)
    ]


@pytest.fixture()
def clients(emulator):
    registry = ProviderRegistry.for_emulator(emulator.base_url, api_key=emulator.api_key, caps=CAPS)
    with ProviderClients(registry, sleep=lambda seconds: None, retry=NO_WAIT) as built:
        yield built


@pytest.fixture()
def ledger(tmp_path):
    ledger = Ledger.for_path(tmp_path / "ledger.db")
    yield ledger
    ledger.close()


def batch_files(emulator) -> list[dict]:
    response = httpx.get(
        f"{emulator.openai_base_url}/files",
        params={"purpose": "batch"},
        headers={"Authorization": f"Bearer {emulator.api_key}"},
    )
    return [f for f in response.json()["data"] if f["filename"].startswith("bp-")]


def crash_at(step: str):
    state = {"crashed": False}

    def hook(name: str) -> None:
        if name == step and not state["crashed"]:
            state["crashed"] = True
            raise Crash(step)

    return hook


@pytest.mark.parametrize(
    "model, vendor, step",
    [("gpt-5.4-mini", "openai", s) for s in OPENAI_STEPS]
    + [("claude-sonnet-4.6", "anthropic", s) for s in ANTHROPIC_STEPS],
)
def test_a_crash_at_any_submit_step_then_a_retry_makes_one_batch_per_shard(
    emulator, clients, ledger, tmp_path, model, vendor, step
):
    """Crash at the step, submit again: one vendor batch per intent, no orphan upload, every item assigned."""
    client = clients.for_model(model)
    with pytest.raises(Crash):
        submit_partition(
            ledger,
            client,
            requests_for(model),
            job="j",
            partition="p",
            work_dir=tmp_path / "w",
            crash_hook=crash_at(step),
        )
    infos = submit_partition(ledger, client, requests_for(model), job="j", partition="p", work_dir=tmp_path / "w")

    stats = emulator.stats()
    assert stats["batches_created"].get(vendor, 0) == 2 == len({i.vendor_batch_id for i in infos})
    intents = ledger.intents("j", "p")
    assert len(intents) == 2 and all(i.status == "submitted" for i in intents)
    assert {i.vendor_batch_id for i in intents} == {i.vendor_batch_id for i in infos}
    assert ledger.item_counts("j", "p") == {"submitted": ITEMS}
    assert sorted(r.vendor_batch_id for r in ledger.batches("j", "p")) == sorted(i.vendor_batch_id for i in infos)
    if vendor == "openai":
        files = batch_files(emulator)
        assert sorted(f["filename"] for f in files) == sorted(f"{i.intent_key}.jsonl" for i in intents)
        assert {f["id"] for f in files} == {i.input_file_id for i in infos}


def test_submitting_a_finished_partition_again_changes_nothing(emulator, clients, ledger, tmp_path):
    """A second full submit re-attaches to both batches: same ids, no new batch, no new upload."""
    client = clients.for_model("gpt-5.4-mini")
    first = submit_partition(
        ledger, client, requests_for("gpt-5.4-mini"), job="j", partition="p", work_dir=tmp_path / "w"
    )
    second = submit_partition(
        ledger, client, requests_for("gpt-5.4-mini"), job="j", partition="p", work_dir=tmp_path / "w"
    )
    assert [i.vendor_batch_id for i in first] == [i.vendor_batch_id for i in second]
    assert emulator.stats()["batches_created"]["openai"] == 2 and len(batch_files(emulator)) == 2


def test_a_repeated_custom_id_is_refused_before_any_provider_call(emulator, clients, ledger, tmp_path):
    """Two requests with one custom_id fail with a clear error and nothing reaches the vendor."""
    requests = requests_for("gpt-5.4-mini")
    requests[7] = LLMRequest("c-0", Endpoint.CHAT, "gpt-5.4-mini", {"messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(InvalidInputError, match="'c-0' appears twice"):
        submit_partition(
            ledger, clients.for_model("gpt-5.4-mini"), requests, job="j", partition="p", work_dir=tmp_path / "w"
        )
    assert emulator.stats()["batches_created"].get("openai", 0) == 0 and batch_files(emulator) == []


class QueueLimitedVendor:
    """An OpenAI-compatible fake whose queue refuses (429) any batch of more than ``limit`` requests."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.files: dict[str, int] = {}
        self.batches: list[dict] = []
        self.ids = itertools.count()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v1/files":
            file_id = f"file-{next(self.ids)}"
            self.files[file_id] = request.read().count(b'"custom_id"')
            return httpx.Response(200, json={"id": file_id, "object": "file"})
        if request.method == "POST" and path == "/v1/batches":
            body = orjson.loads(request.content)
            if self.files[body["input_file_id"]] > self.limit:
                return httpx.Response(
                    429, json={"error": {"message": "Enqueued token limit reached", "code": "rate_limit_exceeded"}}
                )
            batch = {
                "id": f"batch_{next(self.ids)}",
                "status": "validating",
                "input_file_id": body["input_file_id"],
                "metadata": body["metadata"],
                "created_at": 1_900_000_000,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
            }
            self.batches.append(batch)
            return httpx.Response(200, json=batch)
        if request.method == "GET" and path == "/v1/files":
            return httpx.Response(200, json={"data": [], "has_more": False})
        if request.method == "DELETE":
            return httpx.Response(200, json={"deleted": True})
        raise AssertionError(f"unexpected {request.method} {path}")


def test_a_full_queue_splits_the_shard_and_spends_no_attempt(tmp_path, ledger):
    """429 on create for 8 requests: halves of 4 go through, items are assigned once, attempts are 1."""
    vendor = QueueLimitedVendor(limit=4)
    config = ProviderConfig(
        name="openai-q",
        protocol="openai",
        base_url="https://vendor.test/v1",
        api_key_env="UNUSED",
        api_key="sk-test",
        caps=BatchCaps(max_requests=50, max_bytes=10**6),
    )
    client = build_client(config, transport=httpx.MockTransport(vendor), retry=NO_WAIT, sleep=lambda s: None)
    infos = submit_partition(
        ledger, client, requests_for("gpt-5.4-mini"), job="j", partition="p", work_dir=tmp_path / "w"
    )
    assert [vendor.files[i.input_file_id] for i in infos] == [4, 4]
    assert len(vendor.batches) == 2
    assert {item.attempts for item in ledger.iter_items("j", "p")} == {1}
    assert ledger.item_counts("j", "p") == {"submitted": ITEMS}


def test_a_queue_too_full_for_even_the_smallest_split_raises_queue_full(tmp_path, ledger):
    """When even the smallest piece is refused, QueueFullError reaches the caller and items stay pending."""
    vendor = QueueLimitedVendor(limit=0)
    config = ProviderConfig(
        name="openai-q", protocol="openai", base_url="https://vendor.test/v1", api_key_env="UNUSED", api_key="sk-test"
    )
    client = build_client(config, transport=httpx.MockTransport(vendor), retry=NO_WAIT, sleep=lambda s: None)
    with pytest.raises(QueueFullError):
        submit_partition(ledger, client, requests_for("gpt-5.4-mini"), job="j", partition="p", work_dir=tmp_path / "w")
    assert ledger.item_counts("j", "p") == {"pending": ITEMS} and vendor.batches == []


class FlakyCreateVendor:
    """A vendor of either protocol whose first create answers 500: after creating the batch
    (``lost_answer``: the answer is lost) or before (nothing was created)."""

    def __init__(self, protocol: str, *, lost_answer: bool) -> None:
        self.protocol = protocol
        self.lost_answer = lost_answer
        self.batches: list[dict] = []
        self.creates = 0
        self.ids = itertools.count()

    def _batch(self, request: httpx.Request) -> dict:
        body = orjson.loads(request.content)
        if self.protocol == "anthropic":
            n = len(body["requests"])
            return {
                "id": f"msgbatch_{next(self.ids)}",
                "type": "message_batch",
                "processing_status": "in_progress",
                "request_counts": {"processing": n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
                "created_at": "2030-01-01T00:00:00Z",
            }
        return {
            "id": f"batch_{next(self.ids)}",
            "status": "validating",
            "input_file_id": body["input_file_id"],
            "metadata": body["metadata"],
            "created_at": 1_900_000_000,
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        create_path = "/v1/messages/batches" if self.protocol == "anthropic" else "/v1/batches"
        if request.method == "POST" and path == create_path:
            self.creates += 1
            if self.creates == 1:
                if self.lost_answer:
                    self.batches.append(self._batch(request))
                return httpx.Response(500, json={"error": {"message": "internal error", "type": "api_error"}})
            batch = self._batch(request)
            self.batches.append(batch)
            return httpx.Response(200, json=batch)
        if request.method == "GET" and path == create_path:
            return httpx.Response(200, json={"data": list(reversed(self.batches)), "has_more": False})
        if request.method == "POST" and path == "/v1/files":
            return httpx.Response(200, json={"id": f"file-{next(self.ids)}", "object": "file"})
        if request.method == "GET" and path == "/v1/files":
            return httpx.Response(200, json={"data": [], "has_more": False})
        raise AssertionError(f"unexpected {request.method} {path}")


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize("lost_answer", [True, False], ids=["created-then-500", "500-before-create"])
def test_a_5xx_on_create_looks_for_the_batch_before_creating_again(tmp_path, ledger, protocol, lost_answer):
    """One 5xx on create, under both protocols: if the vendor made the batch it is adopted, else one more
    create is sent; either way one batch holds the shard and its items are assigned once."""
    vendor = FlakyCreateVendor(protocol, lost_answer=lost_answer)
    base = "https://vendor.test" if protocol == "anthropic" else "https://vendor.test/v1"
    config = ProviderConfig(name="v", protocol=protocol, base_url=base, api_key_env="UNUSED", api_key="sk-test")
    client = build_client(config, transport=httpx.MockTransport(vendor), retry=NO_WAIT, sleep=lambda s: None)
    model = "claude-sonnet-4.6" if protocol == "anthropic" else "gpt-5.4-mini"
    [info] = submit_partition(ledger, client, requests_for(model), job="j", partition="p", work_dir=tmp_path / "w")
    assert len(vendor.batches) == 1 and info.vendor_batch_id == vendor.batches[0]["id"]
    assert vendor.creates == (1 if lost_answer else 2)
    assert ledger.item_counts("j", "p") == {"submitted": ITEMS}
    assert {item.attempts for item in ledger.iter_items("j", "p")} == {1}
