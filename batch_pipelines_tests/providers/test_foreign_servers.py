"""Our clients against servers we did not write: only what the vendors' references promise is relied on.

Each fake is a plain function behind ``httpx.MockTransport`` that serves just the documented
routes a minimal OpenAI- or Anthropic-compatible server has: no file list, no batch list, a
base URL with a path prefix, a root-relative ``results_url``.
"""

from __future__ import annotations

import itertools

import httpx
import orjson
import pytest

from batch_pipelines.core.errors import ProviderError
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.ledger import Ledger
from batch_pipelines.providers.client import build_client
from batch_pipelines.providers.config import ProviderConfig
from batch_pipelines.providers.http import path_segment
from batch_pipelines.providers.retry import NO_WAIT
from batch_pipelines.services.submit import submit_partition

CHAT_MODEL = "gpt-5.4-mini"
CLAUDE = "claude-sonnet-4.6"


class MinimalOpenAIServer:
    """Files upload, batch create and retrieve, file content; ``GET /files`` and ``GET /batches`` answer 405."""

    def __init__(self) -> None:
        self.ids = itertools.count()
        self.batches: dict[str, dict] = {}
        self.seen: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        self.seen.append((method, path))
        if method == "POST" and path == "/v1/files":
            return httpx.Response(200, json={"id": f"file-{next(self.ids)}", "object": "file"})
        if method == "POST" and path == "/v1/batches":
            body = orjson.loads(request.content)
            batch = {
                "id": f"batch_{next(self.ids)}",
                "object": "batch",
                "status": "validating",
                "endpoint": body["endpoint"],
                "input_file_id": body["input_file_id"],
                "metadata": body["metadata"],
                "created_at": 1_900_000_000,
            }
            self.batches[batch["id"]] = batch
            return httpx.Response(200, json=batch)
        if method == "GET" and path.startswith("/v1/batches/"):
            return httpx.Response(200, json=self.batches[path.rsplit("/", 1)[1]])
        return httpx.Response(405, json={"error": {"message": "Method Not Allowed", "type": "invalid_request_error"}})


def openai_config() -> ProviderConfig:
    return ProviderConfig(
        name="gateway", protocol="openai", base_url="https://gateway.test/v1", api_key_env="UNUSED", api_key="sk-x"
    )


def chat_requests(n: int = 3) -> list[LLMRequest]:
    return [
        LLMRequest(f"c-{i}", Endpoint.CHAT, CHAT_MODEL, {"messages": [{"role": "user", "content": f"hi {i}"}]})
        for i in range(n)
    ]


@pytest.fixture()
def ledger(tmp_path):
    ledger = Ledger.for_path(tmp_path / "ledger.db")
    yield ledger
    ledger.close()


def test_submit_succeeds_on_a_server_without_a_file_list(tmp_path, ledger):
    """No GET /v1/files (405): the optional orphan clean-up is skipped, the batch is recorded and its items assigned."""
    server = MinimalOpenAIServer()
    client = build_client(openai_config(), transport=httpx.MockTransport(server), retry=NO_WAIT)
    [info] = submit_partition(ledger, client, chat_requests(), job="j", partition="p", work_dir=tmp_path / "w")
    assert ("GET", "/v1/files") in server.seen
    assert ledger.get_batch("gateway", info.vendor_batch_id) is not None
    assert ledger.item_counts("j", "p") == {"submitted": 3}
    again = submit_partition(ledger, client, chat_requests(), job="j", partition="p", work_dir=tmp_path / "w")
    assert [i.vendor_batch_id for i in again] == [info.vendor_batch_id] and len(server.batches) == 1


def test_poll_falls_back_to_one_get_per_batch_without_a_batch_list(tmp_path, ledger):
    """No GET /v1/batches (405): poll asks for each batch by id instead of failing."""
    server = MinimalOpenAIServer()
    client = build_client(openai_config(), transport=httpx.MockTransport(server), retry=NO_WAIT)
    [info] = submit_partition(ledger, client, chat_requests(), job="j", partition="p", work_dir=tmp_path / "w")
    server.batches[info.vendor_batch_id]["status"] = "in_progress"
    polled = client.batch.poll([info.vendor_batch_id])
    assert polled[info.vendor_batch_id].status is BatchStatus.IN_PROGRESS
    assert ("GET", "/v1/batches") in server.seen


class PrefixedAnthropicServer:
    """An Anthropic-compatible server under ``/anthropic`` whose ``results_url`` is given as ``results_url``."""

    RESULT_LINE = {
        "custom_id": "m-0",
        "result": {
            "type": "succeeded",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": CLAUDE,
                "content": [{"type": "text", "text": "hello"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 3, "output_tokens": 1},
            },
        },
    }

    def __init__(self, results_url: str, *, serve_results_at: str) -> None:
        self.results_url = results_url
        self.serve_results_at = serve_results_at
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        if request.url.path == self.serve_results_at:
            return httpx.Response(200, content=orjson.dumps(self.RESULT_LINE) + b"\n")
        if request.url.path == "/anthropic/v1/messages/batches/msgbatch_1":
            return httpx.Response(
                200,
                json={
                    "id": "msgbatch_1",
                    "type": "message_batch",
                    "processing_status": "ended",
                    "request_counts": {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0},
                    "results_url": self.results_url,
                    "created_at": "2026-01-01T00:00:00Z",
                    "ended_at": "2026-01-01T01:00:00Z",
                },
            )
        return httpx.Response(404, json={"type": "error", "error": {"type": "not_found_error", "message": "no"}})


def anthropic_lane(server: PrefixedAnthropicServer):
    config = ProviderConfig(
        name="anthropic-proxy",
        protocol="anthropic",
        base_url="https://proxy.test/anthropic",
        api_key_env="UNUSED",
        api_key="k",
    )
    return build_client(config, transport=httpx.MockTransport(server), retry=NO_WAIT).batch


def test_a_root_relative_results_url_is_resolved_against_the_host(tmp_path):
    """results_url '/anthropic/v1/…/results' under base '…/anthropic' is fetched once, at that path (RFC 3986)."""
    path = "/anthropic/v1/messages/batches/msgbatch_1/results"
    server = PrefixedAnthropicServer(path, serve_results_at=path)
    lane = anthropic_lane(server)
    files = lane.download_results(lane.get("msgbatch_1"), tmp_path)
    assert files.output is not None and files.output.read_bytes().startswith(b'{"custom_id":"m-0"')
    assert server.seen[-1] == f"https://proxy.test{path}"


def test_a_results_url_that_404s_falls_back_to_the_documented_route(tmp_path):
    """A results_url the server does not serve: the documented /v1/messages/batches/{id}/results is used."""
    server = PrefixedAnthropicServer(
        "/elsewhere/results.jsonl", serve_results_at="/anthropic/v1/messages/batches/msgbatch_1/results"
    )
    lane = anthropic_lane(server)
    files = lane.download_results(lane.get("msgbatch_1"), tmp_path)
    assert files.output is not None and files.output.stat().st_size > 0
    assert server.seen[-2:] == [
        "https://proxy.test/elsewhere/results.jsonl",
        "https://proxy.test/anthropic/v1/messages/batches/msgbatch_1/results",
    ]


def test_a_results_url_on_another_host_never_gets_our_key(tmp_path):
    """An absolute results_url on another host is not requested (our key goes to the base URL only)."""
    server = PrefixedAnthropicServer(
        "https://attacker.test/steal", serve_results_at="/anthropic/v1/messages/batches/msgbatch_1/results"
    )
    lane = anthropic_lane(server)
    lane.download_results(lane.get("msgbatch_1"), tmp_path)
    assert not any("attacker.test" in url for url in server.seen)


def test_a_failed_download_names_the_url_actually_requested(tmp_path):
    """When both the results_url and the documented route fail, the error names the URL requested, not the reference."""
    server = PrefixedAnthropicServer("/gone/results", serve_results_at="/nowhere")
    lane = anthropic_lane(server)
    with pytest.raises(ProviderError) as caught:
        lane.download_results(lane.get("msgbatch_1"), tmp_path)
    assert "https://proxy.test/anthropic/v1/messages/batches/msgbatch_1/results" in caught.value.message
    assert caught.value.status_code == 404


@pytest.mark.parametrize("hostile", ["..", ".", "../../admin", "a/b?c=d#e"])
def test_a_hostile_vendor_id_stays_one_path_segment(hostile):
    """An id from the server cannot climb out of, or add to, the route it is put in."""
    url = httpx.URL(f"https://vendor.test/v1/batches/{path_segment(hostile)}")
    assert url.raw_path.startswith(b"/v1/batches/") and url.raw_path.count(b"/") == 3
    assert url.query == b"" and url.fragment == "" and url.path.startswith("/v1/batches/")


def test_a_resumed_submit_on_a_server_without_a_batch_list_refuses_to_guess(tmp_path, ledger):
    """A submit that died after create, resumed where no GET /v1/batches exists: a clear error, no second batch."""
    from batch_pipelines.core.errors import LedgerError

    server = MinimalOpenAIServer()
    client = build_client(openai_config(), transport=httpx.MockTransport(server), retry=NO_WAIT)

    def crash_after_create(step: str) -> None:
        if step == "created":
            raise RuntimeError("the process dies here")

    with pytest.raises(RuntimeError):
        submit_partition(
            ledger,
            client,
            chat_requests(),
            job="j",
            partition="p",
            work_dir=tmp_path / "w",
            crash_hook=crash_after_create,
        )
    with pytest.raises(LedgerError, match="has no batch list \\(HTTP 405\\).*refusing to create another"):
        submit_partition(ledger, client, chat_requests(), job="j", partition="p", work_dir=tmp_path / "w")
    assert len(server.batches) == 1
