"""Sync routes, injected sync faults, downloads, and the vendors' error shapes on bad requests."""

from __future__ import annotations

import base64
import socket
from array import array

import httpx
import openai
import orjson
import pytest
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion

from batch_pipelines.emulator.testing import run_emulator
from batch_pipelines_tests.emulator.helpers import anthropic_client, chat_batch, openai_client, strict

OPENAI = {"Authorization": "Bearer k"}
ANTHROPIC = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def test_chat_completion_validates_strictly_and_reports_usage(emulator):
    """A chat completion is a strict ChatCompletion whose usage counts prompt and completion tokens."""
    client = openai_client(emulator)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-5.4", messages=[{"role": "user", "content": "hello there"}]
    )
    completion = strict(ChatCompletion, raw.http_response.json())
    assert completion.choices[0].finish_reason == "stop"
    assert (
        completion.usage.prompt_tokens > 0
        and completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_long_repeated_prefix_reports_cached_tokens(emulator):
    """A second prompt sharing a 1,024+ token prefix reports it cached, in steps of 128 (both vendors)."""
    system = "policy clause " * 700
    client = openai_client(emulator)
    first = client.chat.completions.create(
        model="gpt-5.4", messages=[{"role": "system", "content": system}, {"role": "user", "content": "one"}]
    )
    second = client.chat.completions.create(
        model="gpt-5.4", messages=[{"role": "system", "content": system}, {"role": "user", "content": "two"}]
    )
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= 1024 and cached % 128 == 0 and cached <= second.usage.prompt_tokens
    message = anthropic_client(emulator).messages.create(
        model="claude-sonnet-4-6", max_tokens=10, system=system, messages=[{"role": "user", "content": "three"}]
    )
    assert message.usage.cache_read_input_tokens == cached
    assert message.usage.input_tokens == second.usage.prompt_tokens - cached


def test_max_tokens_truncates_with_length_finish_reason(emulator):
    """max_completion_tokens cuts the answer and says finish_reason=length (max_tokens for Anthropic)."""
    client = openai_client(emulator)
    long_text = "First sentence here. Second sentence follows. Third one too. Fourth sentence ends."
    completion = client.chat.completions.create(
        model="gpt-5.4", max_completion_tokens=3, messages=[{"role": "user", "content": "Summarize: " + long_text}]
    )
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 3
    message = anthropic_client(emulator).messages.create(
        model="claude-sonnet-4-6", max_tokens=3, messages=[{"role": "user", "content": "Summarize: " + long_text}]
    )
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


def test_embeddings_float_and_base64_agree(emulator):
    """Embeddings have the requested dimension; base64 decodes to the same float32 vector."""
    client = openai_client(emulator)
    as_float = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["red apple", "green apple"], dimensions=32, encoding_format="float"
    )
    parsed = strict(CreateEmbeddingResponse, as_float.http_response.json())
    assert [len(d.embedding) for d in parsed.data] == [32, 32]
    as_b64 = httpx.post(
        f"{emulator.openai_base_url}/embeddings",
        headers=OPENAI,
        json={"model": "text-embedding-3-small", "input": "red apple", "dimensions": 32, "encoding_format": "base64"},
    ).json()
    decoded = array("f", base64.b64decode(as_b64["data"][0]["embedding"])).tolist()
    assert decoded == pytest.approx(parsed.data[0].embedding, abs=1e-6)
    # The SDK asks for base64 by default and decodes it after parsing, which its own strict
    # mode rejects (the field is typed as a float list): use a default client for this call.
    default = openai.OpenAI(
        base_url=emulator.openai_base_url, api_key=emulator.api_key, max_retries=0
    ).embeddings.create(model="text-embedding-3-large", input="x")
    assert len(default.data[0].embedding) == 3072


def test_models_lists_cover_both_surfaces(emulator):
    """GET /v1/models lists the OpenAI-surface models; with anthropic-version it lists Claude models."""
    client = openai_client(emulator)
    ids = {m.id for m in client.models.list()}
    assert {
        "gpt-5.4",
        "gpt-5.4-mini",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "gemini-3-flash",
        "gemini-3.1-pro",
        "gemini-embedding-001",
        "deepseek-v3.2",
    } <= ids
    strict(Model, client.models.with_raw_response.retrieve("gpt-5.4").http_response.json())
    claude = {m.id for m in anthropic_client(emulator).models.list()}
    assert {"claude-opus-4.7", "claude-sonnet-4.6"} <= claude


def test_sync_429_burst_then_success_with_retry_after(emulator):
    """sync_429_burst: N consecutive 429s with Retry-After for the same request, then a 200."""
    emulator.set_profile({"sync_429_burst": 2, "retry_after_seconds": 3})
    body = {"model": "gpt-5.4", "messages": [{"role": "user", "content": "burst"}]}
    url = f"{emulator.openai_base_url}/chat/completions"
    statuses = [httpx.post(url, headers=OPENAI, json=body) for _ in range(3)]
    assert [r.status_code for r in statuses] == [429, 429, 200]
    assert statuses[0].headers["retry-after"] == "3" and statuses[0].json()["error"]["code"] == "rate_limit_exceeded"
    anthropic_429 = httpx.post(
        f"{emulator.base_url}/v1/messages",
        headers=ANTHROPIC,
        json={"model": "claude-opus-4-7", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    )
    assert anthropic_429.status_code == 429 and anthropic_429.json()["error"]["type"] == "rate_limit_error"


def test_sync_429_rate_refuses_a_share_of_attempts_with_retry_after(emulator):
    """sync_429_rate: about that share of sync attempts get a 429 with Retry-After; the rest answer 200."""
    emulator.set_profile({"seed": 5, "sync_429_rate": 0.3, "retry_after_seconds": 2})
    url = f"{emulator.openai_base_url}/chat/completions"
    answers = [
        httpx.post(url, headers=OPENAI, json={"model": "gpt-5.4", "messages": [{"role": "user", "content": f"q{i}"}]})
        for i in range(60)
    ]
    refused = [r for r in answers if r.status_code == 429]
    assert 6 <= len(refused) <= 30 and len(refused) + sum(r.status_code == 200 for r in answers) == 60
    assert all(r.headers["retry-after"] == "2" for r in refused)


def test_sync_5xx_and_route_5xx_are_vendor_shaped(emulator):
    """sync_5xx_rate and route_5xx_rate inject 500s in each vendor's error shape."""
    emulator.set_profile({"sync_5xx_rate": 1.0, "route_5xx_rate": 1.0})
    chat = httpx.post(
        f"{emulator.openai_base_url}/chat/completions",
        headers=OPENAI,
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
    )
    assert chat.status_code == 500 and chat.json()["error"]["type"] == "server_error"
    listing = httpx.get(f"{emulator.base_url}/v1/messages/batches", headers=ANTHROPIC)
    assert listing.status_code == 500 and listing.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": listing.json()["error"]["message"]},
    }
    with pytest.raises(openai.InternalServerError):
        openai_client(emulator).batches.list()


def test_download_drops_once_then_range_resume_and_retry_succeed(emulator):
    """A download cut part-way resumes with Range: bytes=N- (206), and a plain retry gets it whole."""
    client = openai_client(emulator)
    batch = chat_batch(client, 30)
    emulator.advance(3600)
    output_id = client.batches.retrieve(batch.id).output_file_id
    emulator.set_profile({"download_drop_after_bytes": 1000})
    url = f"{emulator.openai_base_url}/files/{output_id}/content"
    received = bytearray()
    with pytest.raises(httpx.TransportError):
        with httpx.stream("GET", url, headers=OPENAI) as response:
            total = int(response.headers["content-length"])
            for chunk in response.iter_bytes():
                received.extend(chunk)
    assert 0 < len(received) < total
    rest = httpx.get(url, headers={**OPENAI, "Range": f"bytes={len(received)}-"})
    assert rest.status_code == 206 and rest.headers["content-range"] == f"bytes {len(received)}-{total - 1}/{total}"
    whole = httpx.get(url, headers=OPENAI)
    assert whole.status_code == 200 and bytes(received) + rest.content == whole.content and len(whole.content) == total


def test_anthropic_results_support_range(emulator):
    """Anthropic results downloads answer Range requests with 206."""
    client = anthropic_client(emulator)
    from batch_pipelines_tests.emulator.helpers import anthropic_requests

    batch = client.messages.batches.create(requests=anthropic_requests(3))
    emulator.advance(3600)
    url = client.messages.batches.retrieve(batch.id).results_url
    whole = httpx.get(url, headers=ANTHROPIC).content
    tail = httpx.get(url, headers={**ANTHROPIC, "Range": "bytes=10-"})
    assert tail.status_code == 206 and tail.content == whole[10:]


# -- errors ------------------------------------------------------------------------------


def test_missing_key_is_401_in_each_vendor_shape(emulator):
    """No credential: 401 with OpenAI's error object or Anthropic's authentication_error."""
    openai_401 = httpx.get(f"{emulator.openai_base_url}/batches")
    assert openai_401.status_code == 401 and set(openai_401.json()["error"]) == {"message", "type", "param", "code"}
    anthropic_401 = httpx.get(f"{emulator.base_url}/v1/messages/batches")
    assert anthropic_401.status_code == 401 and anthropic_401.json()["error"]["type"] == "authentication_error"


def test_configured_key_must_match_and_is_never_echoed(tmp_path):
    """With an API key configured, any other key is a 401 that does not repeat the key sent."""
    with run_emulator(state_dir=tmp_path, api_key="right-key") as emu:
        wrong = httpx.get(f"{emu.openai_base_url}/models", headers={"Authorization": "Bearer wrong-key-123"})
        assert wrong.status_code == 401 and "wrong-key-123" not in wrong.text
        assert (
            httpx.get(f"{emu.openai_base_url}/models", headers={"Authorization": "Bearer right-key"}).status_code == 200
        )
        assert httpx.get(f"{emu.base_url}/v1/messages/batches", headers={"x-api-key": "right-key"}).status_code == 200


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/batches/batch_doesnotexist"),
        ("GET", "/v1/batches/..%2F..%2Femulator.json"),
        ("GET", "/v1/files/file-..%2F..%2Femulator/content"),
        ("GET", "/v1/files/..%2Femulator.json"),
        ("POST", "/v1/batches/batch_x/cancel"),
        ("GET", "/v1/files/file-nope/content"),
        ("DELETE", "/v1/files/file-nope"),
        ("GET", "/v1/no/such/route"),
    ],
)
def test_unknown_or_escaping_ids_are_openai_404s(emulator, method, path):
    """Unknown ids, ids that try to leave the state dir, and unknown routes are 404s in OpenAI's shape."""
    response = httpx.request(method, emulator.base_url + path, headers=OPENAI)
    assert response.status_code == 404 and "error" in response.json()


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/messages/batches/msgbatch_nope"),
        ("GET", "/v1/messages/batches/..%2F..%2Femulator.json/results"),
        ("POST", "/v1/messages/batches/msgbatch_nope/cancel"),
        ("DELETE", "/v1/messages/batches/%2E%2E"),
    ],
)
def test_unknown_message_batches_are_anthropic_404s(emulator, method, path):
    """Unknown or escaping Message Batch ids are not_found_error 404s."""
    response = httpx.request(method, emulator.base_url + path, headers=ANTHROPIC)
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    "path, headers",
    [
        ("/v1/chat/completions", OPENAI),
        ("/v1/embeddings", OPENAI),
        ("/v1/batches", OPENAI),
        ("/v1/messages", ANTHROPIC),
        ("/v1/messages/batches", ANTHROPIC),
    ],
)
@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"", b"[1, 2]", b'{"model": 5}', b'{"messages": "x", "model": "m"}', b'{"requests": [1]}', b"null"],
)
def test_bad_bodies_are_400s_never_500s(emulator, path, headers, payload):
    """Malformed or ill-typed JSON bodies get a vendor-shaped 400/404, never a 500."""
    response = httpx.post(
        emulator.base_url + path, headers={**headers, "content-type": "application/json"}, content=payload
    )
    assert response.status_code in (400, 404), response.text
    body = response.json()
    assert ("error" in body) and ("Traceback" not in response.text)


def _raw_post_headers(base_url: str, path: str, headers: dict[str, str], length: int) -> int:
    """Send only the request head with a huge Content-Length; return the status code."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        )
        sock.sendall(head.encode())
        return int(sock.recv(200).split(b" ", 2)[1])


def test_oversized_uploads_and_batches_are_413(emulator):
    """Bodies over the vendor caps (200 MB file, 256 MB message batch) are refused with 413 up front."""
    multipart = {**OPENAI, "Content-Type": "multipart/form-data; boundary=x"}
    assert _raw_post_headers(emulator.base_url, "/v1/files", multipart, 300 * 1024 * 1024) == 413
    assert (
        _raw_post_headers(
            emulator.base_url,
            "/v1/messages/batches",
            {**ANTHROPIC, "Content-Type": "application/json"},
            300 * 1024 * 1024,
        )
        == 413
    )


def test_upload_without_file_or_purpose_is_400(emulator):
    """A multipart upload missing its file or purpose is a 400 naming the parameter."""
    no_file = httpx.post(
        f"{emulator.openai_base_url}/files", headers=OPENAI, data={"purpose": "batch"}, files={"other": ("a", b"x")}
    )
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    bad_purpose = httpx.post(
        f"{emulator.openai_base_url}/files", headers=OPENAI, data={"purpose": "nope"}, files={"file": ("a.jsonl", b"x")}
    )
    assert bad_purpose.status_code == 400 and bad_purpose.json()["error"]["param"] == "purpose"


def test_batch_create_refuses_bad_parameters(emulator):
    """Unknown input files, wrong endpoints and windows are 400s at create time."""
    url = f"{emulator.openai_base_url}/batches"
    for payload in (
        {"input_file_id": "file-missing", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        {"input_file_id": "file-x", "endpoint": "/v1/images", "completion_window": "24h"},
        {"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "48h"},
    ):
        response = httpx.post(url, headers=OPENAI, json=payload)
        assert response.status_code == 400, payload


def test_control_plane_advances_the_clock_and_reports_stats(emulator):
    """POST /_emulator/clock/advance moves virtual time; negative seconds are refused; stats count objects."""
    before = emulator.now()
    emulator.advance(90)
    assert emulator.now() == pytest.approx(before + 90)
    assert httpx.post(f"{emulator.base_url}/_emulator/clock/advance", json={"seconds": -1}).status_code == 400
    assert httpx.put(f"{emulator.base_url}/_emulator/profile", json={"no_such_key": 1}).status_code == 400
    chat_batch(openai_client(emulator), 2)
    stats = emulator.stats()
    assert stats["batches_created"] == {"openai": 1, "anthropic": 0} and stats["files"] == 1
    assert orjson.loads(httpx.get(f"{emulator.base_url}/_emulator/health").content)["status"] == "ok"
