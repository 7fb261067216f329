"""The sync lane over httpx.MockTransport: wire format, usage parsing, failures as outcomes, concurrency."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.core.tokens import count_chat_prompt
from batch_pipelines.core.usage import Usage
from batch_pipelines.providers.client import build_client
from batch_pipelines.providers.config import ProviderConfig, RateLimits
from batch_pipelines.providers.retry import RetryPolicy
from batch_pipelines_tests.providers.sync_fakes import (
    VirtualClock,
    anthropic_error,
    chat_body,
    message_body,
    openai_error,
)

FIXED = RetryPolicy(max_attempts=3, initial_delay=1.0, jitter=0.0)
KEY = "sk-test-key-123"


def client_for(handler, *, protocol="openai", clock=None, retry=FIXED, **config):
    clock = clock or VirtualClock()
    base = "https://vendor.test/v1" if protocol == "openai" else "https://vendor.test"
    provider = ProviderConfig(
        name="vendor", protocol=protocol, base_url=base, api_key_env="VENDOR_KEY", api_key=KEY, models=["*"], **config
    )
    transport = httpx.MockTransport(handler)
    return build_client(
        provider, transport=transport, async_transport=transport, sleep=clock.sleep, clock=clock, retry=retry
    )


def chat(custom_id="item-1", model="gpt-4o-mini", **body) -> LLMRequest:
    body = body or {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 16}
    return LLMRequest(custom_id, Endpoint.CHAT, model, body, lane=Lane.SYNC)


def embed(custom_id="emb-1", inputs=("a", "b")) -> LLMRequest:
    return LLMRequest(custom_id, Endpoint.EMBEDDINGS, "text-embedding-3-small", {"input": list(inputs)}, lane=Lane.SYNC)


def message(custom_id="msg-1", model="claude-sonnet-4-5") -> LLMRequest:
    body = {"max_tokens": 64, "system": "Be brief.", "messages": [{"role": "user", "content": "Say hi"}]}
    return LLMRequest(custom_id, Endpoint.MESSAGES, model, body, lane=Lane.SYNC)


MODES = ["sync", "async"]


def run(client, request, mode):
    return client.sync.call(request) if mode == "sync" else asyncio.run(client.sync.acall(request))


@pytest.mark.parametrize("mode", MODES)
def test_openai_chat_request_and_usage(mode):
    """A chat call posts to {base}/chat/completions with Bearer auth and the model, and parses usage."""
    seen: list[httpx.Request] = []

    def vendor(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json=chat_body("gpt-4o-mini-2024-07-18", prompt=1200, completion=40, cached=1024, reasoning=8)
        )

    outcome = run(client_for(vendor), chat(), mode)
    (request,) = seen
    assert str(request.url) == "https://vendor.test/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 16,
        "model": "gpt-4o-mini",
    }
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.usage == Usage(input_tokens=1200, cached_input_tokens=1024, output_tokens=40, reasoning_tokens=8)
    assert outcome.model == "gpt-4o-mini-2024-07-18"
    assert outcome.response["choices"][0]["message"]["content"] == "hi"
    assert (outcome.custom_id, outcome.status_code, outcome.reason) == ("item-1", 200, None)


@pytest.mark.parametrize("mode", MODES)
def test_openai_embeddings_usage(mode):
    """An embeddings call posts to {base}/embeddings and reads prompt_tokens as input."""
    body = {
        "object": "list",
        "data": [{"index": 0, "embedding": [0.1, 0.2]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    seen: list[str] = []

    def vendor(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=body)

    outcome = run(client_for(vendor), embed(), mode)
    assert seen == ["/v1/embeddings"]
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.usage == Usage(input_tokens=7)


@pytest.mark.parametrize("mode", MODES)
def test_anthropic_messages_request_and_usage_folds_cache_into_input(mode):
    """Anthropic calls use x-api-key and anthropic-version; cache reads/writes are folded into input_tokens."""
    seen: list[httpx.Request] = []

    def vendor(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=message_body(inp=10, out=4, read=2000, write=500))

    outcome = run(client_for(vendor, protocol="anthropic"), message(), mode)
    (request,) = seen
    assert str(request.url) == "https://vendor.test/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert outcome.usage == Usage(input_tokens=2510, cached_input_tokens=2000, cache_write_tokens=500, output_tokens=4)
    assert outcome.usage.uncached_input_tokens == 10


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
def test_non_retryable_error_is_a_failed_outcome_with_the_vendor_reason(mode, code):
    """A 4xx other than 408/409/429 is sent once and becomes FAILED with status, message and code."""
    calls = []

    def vendor(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return openai_error(code, "The model `gpt-9` does not exist", "model_not_found")

    outcome = run(client_for(vendor), chat(), mode)
    assert len(calls) == 1
    assert outcome.kind is OutcomeKind.FAILED
    assert (outcome.status_code, outcome.error_code) == (code, "model_not_found")
    assert outcome.reason == "The model `gpt-9` does not exist"
    assert not outcome.is_retryable


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", [408, 409, 429, 500, 503, 529])
def test_retryable_error_then_success_is_a_success(mode, code):
    """A transient status is retried and the item succeeds."""
    clock = VirtualClock()
    responses = [anthropic_error(code), httpx.Response(200, json=message_body())]
    outcome = run(client_for(lambda r: responses.pop(0), protocol="anthropic", clock=clock), message(), mode)
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert clock.sleeps == [1.0]


@pytest.mark.parametrize("mode", MODES)
def test_retryable_error_that_persists_is_a_retryable_failed_outcome(mode):
    """A 503 that outlives the policy is FAILED with status 503, and the outcome says it may be retried."""
    outcome = run(client_for(lambda r: openai_error(503, "overloaded", None)), chat(), mode)
    assert outcome.kind is OutcomeKind.FAILED
    assert (outcome.status_code, outcome.reason) == (503, "overloaded")
    assert outcome.is_retryable


@pytest.mark.parametrize("mode", MODES)
def test_unreachable_vendor_is_a_failed_outcome(mode):
    """Connection errors that outlive the policy become FAILED with error_code connection_error."""

    def vendor(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    outcome = run(client_for(vendor), chat(), mode)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.status_code is None and outcome.error_code == "connection_error"
    assert "connection refused" in outcome.reason and KEY not in outcome.reason


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        (httpx.Response(200, content=b"<html>gateway</html>"), "malformed response"),
        (httpx.Response(200, json=[1, 2]), "JSON object"),
        (httpx.Response(200, json={**chat_body(), "usage": {"prompt_tokens": "many"}}), "prompt_tokens"),
        (
            httpx.Response(
                200, json={**chat_body(), "usage": {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}}}
            ),
            "inconsistent usage",
        ),
    ],
)
def test_malformed_success_is_a_failed_outcome(response, problem):
    """A 200 whose body is not the documented shape becomes FAILED malformed_response, not a crash."""
    outcome = client_for(lambda r: response).sync.call(chat())
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error_code == "malformed_response"
    assert problem in outcome.reason


def test_success_without_usage_says_so():
    """A 200 without a usage object succeeds with zero usage and a reason saying none was reported."""
    body = chat_body()
    del body["usage"]
    outcome = client_for(lambda r: httpx.Response(200, json=body)).sync.call(chat())
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.usage == Usage()
    assert outcome.reason == "the response reported no usage"


@pytest.mark.parametrize(
    ("protocol", "request_", "problem"),
    [
        ("openai", message(), "cannot serve /v1/messages"),
        ("anthropic", chat(model="claude-x"), "cannot serve /v1/chat/completions"),
        ("anthropic", embed(), "cannot serve /v1/embeddings"),
        ("openai", chat(messages=[], stream=True), "streaming"),
        ("openai", chat(messages=[{"role": "user", "content": object()}]), "JSON-serialisable"),
    ],
)
def test_bad_requests_raise_before_anything_is_sent(protocol, request_, problem):
    """Requests a provider cannot serve raise InvalidInputError, and run_many sends none of the batch."""
    calls = []
    client = client_for(lambda r: calls.append(r) or httpx.Response(200, json=chat_body()), protocol=protocol)
    good = chat() if protocol == "openai" else message()
    with pytest.raises(InvalidInputError, match=problem):
        asyncio.run(client.sync.run_many([good, request_]))
    with pytest.raises(InvalidInputError, match=problem):
        client.sync.call(request_)
    assert calls == []


def test_run_many_returns_outcomes_in_input_order_with_bounded_concurrency():
    """run_many answers every request in input order and never has more than `concurrency` in flight."""
    in_flight = 0
    peak = 0

    async def vendor(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        number = int(json.loads(request.content)["messages"][0]["content"])
        for _ in range(number % 5):
            await asyncio.sleep(0)  # finish out of order
        in_flight -= 1
        return httpx.Response(200, json=chat_body(prompt=number + 1))

    client = client_for(vendor)
    requests = [chat(f"item-{i}", messages=[{"role": "user", "content": str(i)}]) for i in range(50)]
    outcomes = asyncio.run(client.sync.run_many(requests, concurrency=7))
    assert [o.custom_id for o in outcomes] == [f"item-{i}" for i in range(50)]
    assert [o.usage.input_tokens for o in outcomes] == [i + 1 for i in range(50)]
    assert peak == 7


def test_provider_max_concurrency_caps_run_many():
    """rate_limits.max_concurrency bounds in-flight calls even when run_many asks for more."""
    in_flight = 0
    peak = 0

    async def vendor(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        in_flight -= 1
        return httpx.Response(200, json=chat_body())

    client = client_for(vendor, rate_limits=RateLimits(max_concurrency=3))
    outcomes = asyncio.run(client.sync.run_many([chat(f"i-{n}") for n in range(20)], concurrency=50))
    assert len(outcomes) == 20 and peak == 3


def test_one_failing_item_does_not_sink_its_neighbours():
    """In run_many a refused item is FAILED while the others succeed."""

    def vendor(request: httpx.Request) -> httpx.Response:
        if b"poison" in request.content:
            return openai_error(400, "content policy", "content_filter")
        return httpx.Response(200, json=chat_body())

    requests = [chat("a"), chat("b", messages=[{"role": "user", "content": "poison"}]), chat("c")]
    outcomes = asyncio.run(client_for(vendor).sync.run_many(requests))
    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.SUCCEEDED]
    assert outcomes[1].reason == "content policy"


@pytest.mark.parametrize("concurrency", [0, -3])
def test_run_many_refuses_a_concurrency_below_one(concurrency):
    """A concurrency of zero or less is bad input, refused before anything is sent."""
    client = client_for(lambda r: pytest.fail("sent"))
    with pytest.raises(InvalidInputError, match="concurrency must be at least 1"):
        asyncio.run(client.sync.run_many([chat()], concurrency=concurrency))


def test_run_many_of_nothing_is_nothing():
    """An empty input gives an empty list and sends nothing."""
    assert asyncio.run(client_for(lambda r: pytest.fail("sent")).sync.run_many([])) == []


def test_configured_rate_limit_spaces_sync_calls():
    """With 60 rpm and a 1 s burst, three back-to-back calls wait 0, 1 and 2 s on the injected clock."""
    clock = VirtualClock()
    client = client_for(
        lambda r: httpx.Response(200, json=chat_body()),
        clock=clock,
        rate_limits=RateLimits(requests_per_minute=60, burst_seconds=1),
    )
    for _ in range(3):
        client.sync.call(chat())
    assert clock.sleeps == [1.0, 1.0]


def test_token_budget_charges_the_prompt_and_max_output():
    """With a tokens-per-minute limit the lane reserves prompt + max_tokens, then refunds down to real usage."""
    clock = VirtualClock()
    client = client_for(
        lambda r: httpx.Response(200, json=chat_body(prompt=10, completion=2)),
        clock=clock,
        rate_limits=RateLimits(tokens_per_minute=600, burst_seconds=10),  # 10 tokens/s, 100 of burst
    )
    request = chat(messages=[{"role": "user", "content": "hi"}], max_tokens=90)
    estimate = count_chat_prompt(request.body) + 90
    client.sync.call(request)
    assert clock.sleeps == []
    client.sync.call(request)
    # After the first call 100 - estimate + (estimate - 12) tokens remain; the second runs into debt.
    expected_debt = estimate - (100 - 12)
    assert clock.sleeps == [pytest.approx(expected_debt / 10)]


def test_vendor_429_with_retry_after_pauses_the_next_call_too():
    """A 429 with Retry-After: 4 is retried after 4 s, and the model's limiter holds the next caller too."""
    clock = VirtualClock()
    script = [
        openai_error(429, "slow down", "rate_limit_exceeded", **{"retry-after": "4"}),
        httpx.Response(200, json=chat_body()),
    ]
    client = client_for(lambda r: script.pop(0) if len(script) > 1 else script[0], clock=clock)
    assert client.sync.call(chat()).kind is OutcomeKind.SUCCEEDED
    assert clock.sleeps == [4.0]
    limiter = client.sync.limiters.for_model("gpt-4o-mini")
    assert limiter.paused_until == pytest.approx(clock.now)
    assert client.sync.limiters.for_model("other-model").paused_until == 0.0


def test_lane_survives_several_event_loops():
    """run_many works across separate asyncio.run calls (each loop gets its own connections)."""
    client = client_for(lambda r: httpx.Response(200, json=chat_body()))
    for _ in range(3):
        outcomes = asyncio.run(client.sync.run_many([chat("a"), chat("b")]))
        assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED] * 2
    client.close()
