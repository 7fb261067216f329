"""The OpenAI batch lane against httpx.MockTransport: the edge cases the emulator cannot stage."""

from __future__ import annotations

import itertools

import httpx
import orjson
import pytest

from batch_pipelines.core.errors import ProviderError, QueueFullError
from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.core.shard_rules import ShardLimits
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.providers.config import ProviderConfig
from batch_pipelines.providers.http import build_http_client
from batch_pipelines.providers.openai_batch import OpenAIBatchLane, parse_openai_batch
from batch_pipelines.providers.retry import NO_WAIT
from batch_pipelines.providers.sharding import shard_requests

CONFIG = ProviderConfig(
    name="openai-test", protocol="openai", base_url="https://vendor.test/v1", api_key_env="UNUSED", api_key="sk-test"
)


class BrokenStream(httpx.SyncByteStream):
    """A body that sends ``data`` and then drops the connection."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self):
        yield self.data
        raise httpx.ReadError("connection reset by peer")


def make_lane(handler) -> OpenAIBatchLane:
    http = build_http_client(CONFIG, transport=httpx.MockTransport(handler))
    return OpenAIBatchLane(CONFIG, http, NO_WAIT, lambda s: None, lambda: 0.0)


def batch_object(batch_id: str, status: str = "completed", **extra) -> dict:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "status": status,
        "input_file_id": "file-in",
        "created_at": 1_800_000_000,
        "request_counts": {"total": 2, "completed": 2, "failed": 0},
        "metadata": {},
        **extra,
    }


@pytest.fixture()
def shard(tmp_path):
    requests = [
        LLMRequest(f"r-{i}", Endpoint.CHAT, "gpt-5.4-mini", {"messages": [{"role": "user", "content": "hi"}]})
        for i in range(2)
    ]
    [only] = shard_requests(requests, ShardLimits(max_requests=10, max_bytes=10**6), tmp_path / "shards")
    return only


def test_a_download_cut_mid_stream_resumes_with_a_range_request(tmp_path):
    """The second request asks for the missing bytes only, and the file on disk is whole."""
    content = b"".join(orjson.dumps({"custom_id": f"r-{i}", "n": i}) + b"\n" for i in range(500))
    ranges = []

    def handler(request: httpx.Request) -> httpx.Response:
        ranges.append(request.headers.get("range"))
        if len(ranges) == 1:
            return httpx.Response(
                200, headers={"content-length": str(len(content))}, stream=BrokenStream(content[:3000])
            )
        start = int(request.headers["range"].removeprefix("bytes=").rstrip("-"))
        return httpx.Response(206, content=content[start:])

    lane = make_lane(handler)
    info = parse_openai_batch(batch_object("batch_1", output_file_id="file-out"), CONFIG.name)
    files = lane.download_results(info, tmp_path)
    assert files.output.read_bytes() == content
    assert ranges == [None, "bytes=3000-"]
    assert not list(tmp_path.glob("*.part"))


def test_a_server_that_ignores_range_makes_the_download_start_over(tmp_path):
    """A 200 answer to a Range request replaces the partial file instead of appending to it."""
    content = b"x" * 10_000 + b"\n"
    calls = itertools.count()

    def handler(request: httpx.Request) -> httpx.Response:
        if next(calls) == 0:
            return httpx.Response(
                200, headers={"content-length": str(len(content))}, stream=BrokenStream(content[:4000])
            )
        return httpx.Response(200, content=content)

    lane = make_lane(handler)
    assert lane.download("/files/file-out/content", tmp_path / "out.jsonl").read_bytes() == content


def test_a_download_that_keeps_breaking_gives_up_with_a_clear_error(tmp_path):
    """After the policy's attempts the error says the download broke, and no partial file is left as the result."""
    lane = make_lane(
        lambda request: httpx.Response(200, headers={"content-length": "100"}, stream=BrokenStream(b"x" * 10))
    )
    with pytest.raises(ProviderError, match="broke 5 time"):
        lane.download("/files/f/content", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_completed_batch_with_no_output_file_reads_its_error_file(tmp_path):
    """Every line failed: output_file_id is null, the error file supplies every outcome."""
    errors = b"".join(
        orjson.dumps(
            {
                "custom_id": f"r-{i}",
                "response": {"status_code": 400, "body": {"error": {"message": "bad model"}}},
                "error": None,
            }
        )
        + b"\n"
        for i in range(2)
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/files/file-err/content"
        return httpx.Response(200, content=errors)

    lane = make_lane(handler)
    info = parse_openai_batch(batch_object("batch_1", output_file_id=None, error_file_id="file-err"), CONFIG.name)
    files = lane.download_results(info, tmp_path)
    assert files.output is None
    outcomes = list(lane.iter_outcomes(files, ["r-0", "r-1"]))
    assert [(o.kind, o.reason) for o in outcomes] == [(OutcomeKind.FAILED, "bad model")] * 2


def test_an_expired_batch_with_partial_output_accounts_for_every_item(tmp_path):
    """Finished lines succeed, batch_expired lines expire, and an id with no line is missing."""
    ok = {
        "custom_id": "r-0",
        "response": {
            "status_code": 200,
            "body": {
                "choices": [{"message": {"content": "hi"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            },
        },
        "error": None,
    }
    expired = {"custom_id": "r-1", "response": None, "error": {"code": "batch_expired", "message": "expired"}}
    files = {"/v1/files/out/content": orjson.dumps(ok) + b"\n", "/v1/files/err/content": orjson.dumps(expired) + b"\n"}
    lane = make_lane(lambda request: httpx.Response(200, content=files[request.url.path]))
    info = parse_openai_batch(
        batch_object("batch_1", "expired", output_file_id="out", error_file_id="err", expired_at=1_800_090_000),
        CONFIG.name,
    )
    assert info.status is BatchStatus.EXPIRED and info.ended_at is not None
    kinds = {
        o.custom_id: o.kind for o in lane.iter_outcomes(lane.download_results(info, tmp_path), ["r-0", "r-1", "r-2"])
    }
    assert kinds == {"r-0": OutcomeKind.SUCCEEDED, "r-1": OutcomeKind.EXPIRED, "r-2": OutcomeKind.MISSING}


def test_token_limit_failure_is_a_queue_full_signal():
    """A batch that failed with token_limit_exceeded reads as queue-full, not as a failure of its items."""
    info = parse_openai_batch(
        batch_object(
            "batch_1",
            "failed",
            errors={"data": [{"code": "token_limit_exceeded", "message": "Enqueued token limit reached"}]},
        ),
        CONFIG.name,
    )
    assert info.status is BatchStatus.FAILED and info.is_queue_full


def test_429_on_create_is_waited_out_then_raised_as_queue_full(shard):
    """Create honours the retry policy on 429 and then raises QueueFullError, creating nothing."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(
            429, json={"error": {"message": "queue full", "code": "rate_limit_exceeded"}}, headers={"retry-after": "1"}
        )

    lane = make_lane(handler)
    with pytest.raises(QueueFullError, match="queue full"):
        lane.create(shard, intent_key="bp-k", fingerprint=shard.fingerprint, input_file_id="file-in")
    assert calls == ["/v1/batches"] * NO_WAIT.max_attempts


def test_a_lost_create_response_reattaches_to_the_batch_the_vendor_made(shard):
    """The vendor created the batch but the answer never came: create finds it by intent key instead of making a
    second."""
    created: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/batches":
            body = orjson.loads(request.content)
            created.append(batch_object(f"batch_{len(created)}", "validating", metadata=body["metadata"]))
            raise httpx.ReadTimeout("the answer was lost", request=request)
        if request.url.path == "/v1/batches":
            return httpx.Response(200, json={"data": list(reversed(created)), "has_more": False})
        raise AssertionError(request.url)

    lane = make_lane(handler)
    info = lane.create(shard, intent_key="bp-k", fingerprint=shard.fingerprint, input_file_id="file-in")
    assert len(created) == 1
    assert info.vendor_batch_id == "batch_0" and info.metadata["bp_intent"] == "bp-k"
    assert info.metadata["bp_fingerprint"] == shard.fingerprint and info.model == "gpt-5.4-mini"


def test_poll_reads_list_pages_not_one_call_per_batch():
    """Five batches across two list pages cost two calls; an id off the pages costs one get."""
    everything = [batch_object(f"batch_{i}", "in_progress") for i in range(150)]
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.url.path, request.url.params.get("after")))
        if request.url.path == "/v1/batches":
            after = request.url.params.get("after")
            start = 0 if after is None else next(i for i, b in enumerate(everything) if b["id"] == after) + 1
            page = everything[start : start + 100]
            return httpx.Response(
                200, json={"data": page, "has_more": start + 100 < len(everything), "last_id": page[-1]["id"]}
            )
        return httpx.Response(200, json=batch_object(request.url.path.rsplit("/", 1)[1], "completed"))

    lane = make_lane(handler)
    wanted = {"batch_3", "batch_50", "batch_99", "batch_120", "batch_old"}
    everything_ids = {b["id"] for b in everything}
    found = lane.poll(wanted)
    assert set(found) == wanted
    assert found["batch_120"].status is BatchStatus.IN_PROGRESS and found["batch_old"].status is BatchStatus.COMPLETED
    assert calls == [("/v1/batches", None), ("/v1/batches", "batch_99"), ("/v1/batches/batch_old", None)]
    assert "batch_old" not in everything_ids


def test_upload_sends_the_shard_as_the_intent_named_file(shard):
    """The upload is multipart with purpose=batch, the intent's filename and the shard's exact bytes."""
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["body"] = request.read()
        return httpx.Response(200, json={"id": "file-123", "object": "file", "purpose": "batch"})

    assert make_lane(handler).upload(shard, intent_key="bp-key") == "file-123"
    assert b'filename="bp-key.jsonl"' in seen["body"] and b"batch" in seen["body"]
    assert shard.path.read_bytes() in seen["body"]
