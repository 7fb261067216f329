"""`batch-pipelines serve`: the official SDKs against it for interactive calls, deferred calls by HTTP, bad input."""

from __future__ import annotations

import httpx
import pytest
from anthropic import Anthropic
from click.testing import CliRunner
from openai import OpenAI

from batch_pipelines.cli import main
from batch_pipelines.frontdoor.app import FrontDoorSettings
from batch_pipelines.frontdoor.server import InsecureBindError, check_bind, keys_from_env, run_front_door
from batch_pipelines_tests.router.conftest import chat, run_until_collected

KEYS = frozenset({"caller-key-1", "caller-key-2"})
AUTH = {"Authorization": "Bearer caller-key-1"}


@pytest.fixture
def door(router):
    with run_front_door(router, FrontDoorSettings(keys=KEYS, max_body_bytes=64 * 1024)) as running:
        yield running


@pytest.fixture
def http(door):
    with httpx.Client(base_url=door.base_url, timeout=30) as client:
        yield client


def test_official_openai_sdk_makes_interactive_calls(door, emu):
    """An unmodified openai client with one default header gets chat completions and embeddings back."""
    client = OpenAI(
        base_url=door.openai_base_url, api_key="caller-key-2", default_headers={"X-Batch-Lane": "interactive"}
    )
    completion = client.chat.completions.create(
        model="gpt-5.4-mini", messages=[{"role": "user", "content": "Labels: yes, no\nIs water wet?"}]
    )
    assert completion.choices[0].message.content in {"yes", "no"}
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    embedding = client.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert len(embedding.data[0].embedding) > 0
    assert emu.api_key not in completion.model_dump_json()


def test_official_anthropic_sdk_makes_interactive_calls(door):
    """An unmodified anthropic client gets a Message back from /v1/messages."""
    client = Anthropic(base_url=door.base_url, api_key="caller-key-1", default_headers={"X-Batch-Lane": "interactive"})
    message = client.messages.create(
        model="claude-sonnet-4.6", max_tokens=32, messages=[{"role": "user", "content": "Summarize: the sky is blue."}]
    )
    assert message.type == "message" and message.content[0].type == "text"


def test_openai_sdk_sees_its_own_error_types(door):
    """A wrong key is the SDK's AuthenticationError; an unknown model its NotFoundError."""
    import openai

    bad = OpenAI(base_url=door.openai_base_url, api_key="wrong", default_headers={"X-Batch-Lane": "interactive"})
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-5.4-mini", messages=[{"role": "user", "content": "hi"}])
    good = OpenAI(
        base_url=door.openai_base_url, api_key="caller-key-1", default_headers={"X-Batch-Lane": "interactive"}
    )
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        good.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])


def test_deferrable_is_the_default_and_answers_202_then_the_vendor_body(http, router, vtime):
    """Without a lane header a call is deferred: 202 with a deferred_call, later the chat.completion body."""
    accepted = http.post("/v1/chat/completions", json=chat(1), headers={**AUTH, "X-Batch-Deadline": "86400"})
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["object"] == "deferred_call" and body["status"] == "queued" and body["id"].startswith("dfr_")
    assert body["deadline"] is not None
    assert http.get(f"/v1/deferred/{body['id']}", headers=AUTH).json()["status"] == "queued"
    router.flush(everything=True)
    assert http.get(f"/v1/deferred/{body['id']}", headers=AUTH).json()["status"] == "submitted"
    run_until_collected(router, vtime)
    done = http.get(f"/v1/deferred/{body['id']}", headers=AUTH).json()
    assert done["status"] == "succeeded" and done["lane"] == "batch"
    assert done["response"]["object"] == "chat.completion"
    assert done["usage"]["input_tokens"] > 0 and float(done["cost_usd"]) > 0


def test_idempotency_key_header_makes_one_call(http, router):
    """The same Idempotency-Key twice answers the same deferred call."""
    headers = {**AUTH, "Idempotency-Key": "ticket-77"}
    first = http.post("/v1/chat/completions", json=chat(77), headers=headers).json()
    again = http.post("/v1/chat/completions", json=chat(77), headers=headers).json()
    assert first["id"] == again["id"]
    assert router.buffer.depth()[0] == 1


def test_rfc3339_deadline_header_is_kept(http):
    """X-Batch-Deadline as an RFC 3339 time is the call's deadline."""
    body = http.post(
        "/v1/chat/completions", json=chat(2), headers={**AUTH, "X-Batch-Deadline": "2031-01-01T00:00:00Z"}
    ).json()
    assert body["deadline"] == "2031-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("path", "content", "headers", "status", "says"),
    [
        ("/v1/chat/completions", b"{not json", AUTH, 400, "not valid JSON"),
        ("/v1/chat/completions", b'{"model": "no-such-model", "messages": [{"role": "user"}]}', AUTH, 404, "no-such"),
        ("/v1/chat/completions", b'{"model": "gpt-5.4-mini", "messages": []}', AUTH, 400, "messages"),
        ("/v1/chat/completions", b"x" * (65 * 1024), AUTH, 413, "over"),
        ("/v1/chat/completions", None, {**AUTH, "X-Batch-Deadline": "tomorrow"}, 400, "X-Batch-Deadline"),
        ("/v1/chat/completions", None, {**AUTH, "X-Batch-Deadline": "2031-01-01T00:00:00"}, 400, "offset"),
        ("/v1/chat/completions", None, {**AUTH, "X-Batch-Lane": "soon"}, 400, "X-Batch-Lane"),
        ("/v1/chat/completions", None, {}, 401, "no API key"),
        ("/v1/chat/completions", None, {"Authorization": "Bearer nope"}, 401, "not one this server accepts"),
        ("/v1/embeddings", b'{"model": "text-embedding-3-small"}', AUTH, 400, "input"),
    ],
)
def test_bad_input_gets_the_vendor_error_shape_and_nothing_is_enqueued(
    http, router, path, content, headers, status, says
):
    """Each bad request is refused in OpenAI's error shape with a message naming the problem; the buffer stays empty."""
    if content is None:
        content = httpx.Request("POST", "/", json=chat(3)).content
    response = http.post(path, content=content, headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status
    error = response.json()["error"]
    assert says in error["message"] and error["type"]
    assert router.buffer.depth()[0] == 0


def test_anthropic_route_answers_in_anthropic_error_shape(http, router):
    """A messages request without max_tokens and one with a bad x-api-key come back in Anthropic's shape."""
    missing = http.post(
        "/v1/messages",
        json={"model": "claude-sonnet-4.6", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": "caller-key-1"},
    )
    assert missing.status_code == 400
    assert missing.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": missing.json()["error"]["message"]},
    }
    assert "max_tokens" in missing.json()["error"]["message"]
    wrong = http.post("/v1/messages", json={}, headers={"x-api-key": "wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    assert router.buffer.depth()[0] == 0


def test_lookups_need_a_key_too(http):
    """GET /v1/deferred/{id} without a key is 401; an unknown id with a key is 404."""
    assert http.get("/v1/deferred/dfr_x").status_code == 401
    unknown = http.get("/v1/deferred/dfr_x", headers=AUTH)
    assert unknown.status_code == 404 and "dfr_x" in unknown.json()["error"]["message"]


def test_binding_beyond_loopback_needs_keys():
    """Without keys only loopback is served (with a notice); any other address is refused."""
    assert "loopback" in check_bind("127.0.0.1", None)
    assert check_bind("0.0.0.0", KEYS) is None
    with pytest.raises(InsecureBindError, match="BATCH_PIPELINES_SERVE_KEYS"):
        check_bind("0.0.0.0", None)
    assert keys_from_env({"BATCH_PIPELINES_SERVE_KEYS": " a, b ,,"}) == frozenset({"a", "b"})
    assert keys_from_env({}) is None


def test_serve_refuses_a_public_address_without_keys():
    """`batch-pipelines serve --host 0.0.0.0` without keys exits 2 and names the variable."""
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"], env={"BATCH_PIPELINES_SERVE_KEYS": ""})
    assert result.exit_code == 2 and "BATCH_PIPELINES_SERVE_KEYS" in result.output
