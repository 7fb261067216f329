"""The sync lane over real loopback HTTP against the bundled emulator (both protocols, faults)."""

from __future__ import annotations

import asyncio

import pytest

from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.emulator.testing import run_emulator
from batch_pipelines.providers.client import ProviderClients
from batch_pipelines.providers.config import ProviderRegistry
from batch_pipelines.providers.retry import NO_WAIT, RetryPolicy
from batch_pipelines_tests.providers.sync_fakes import VirtualClock

EMULATOR_KEY = "loopback-key"
RETRY = RetryPolicy(max_attempts=6, initial_delay=0.5, jitter=0.0)


@pytest.fixture(scope="module")
def emulator():
    with run_emulator(api_key=EMULATOR_KEY) as emu:
        yield emu


@pytest.fixture()
def emu(emulator):
    """The shared emulator, with a clean fault profile for each test."""
    emulator.set_profile({})
    yield emulator
    emulator.set_profile({})


@pytest.fixture()
def clock():
    return VirtualClock()


@pytest.fixture()
def clients(emu, clock):
    registry = ProviderRegistry.for_emulator(emu.base_url, api_key=EMULATOR_KEY)
    with ProviderClients(registry, sleep=clock.sleep, clock=clock, retry=RETRY) as built:
        yield built


def chat(custom_id: str, text: str = "Summarise: the launch went well.", model: str = "gpt-5.4-mini") -> LLMRequest:
    return LLMRequest(
        custom_id,
        Endpoint.CHAT,
        model,
        {"messages": [{"role": "user", "content": text}], "max_tokens": 32},
        lane=Lane.SYNC,
    )


def message(custom_id: str, text: str = "Say hi", model: str = "claude-haiku-4-5") -> LLMRequest:
    body = {"max_tokens": 32, "system": "Be brief.", "messages": [{"role": "user", "content": text}]}
    return LLMRequest(custom_id, Endpoint.MESSAGES, model, body, lane=Lane.SYNC)


def test_openai_chat_sync_and_async_report_the_emulators_usage(emu, clients):
    """Chat calls (sync and async) succeed and their usage adds up to what the emulator billed."""
    lane = clients.for_model("gpt-5.4-mini").sync
    before = emu.stats()["sync_usage"]
    first = lane.call(chat("c-1"))
    second = asyncio.run(lane.acall(chat("c-2", "Another prompt, somewhat longer than the first one.")))
    after = emu.stats()["sync_usage"]
    for outcome in (first, second):
        assert outcome.kind is OutcomeKind.SUCCEEDED
        assert outcome.usage.input_tokens > 0 and outcome.usage.output_tokens > 0
        assert outcome.response["choices"][0]["message"]["content"]
    assert first.usage.input_tokens + second.usage.input_tokens == after["input_tokens"] - before["input_tokens"]
    assert first.usage.output_tokens + second.usage.output_tokens == after["output_tokens"] - before["output_tokens"]


def test_openai_embeddings(clients):
    """An embeddings call returns one vector per input and the prompt tokens as input usage."""
    request = LLMRequest(
        "e-1", Endpoint.EMBEDDINGS, "text-embedding-3-small", {"input": ["alpha beta", "gamma"]}, lane=Lane.SYNC
    )
    outcome = clients.for_model("text-embedding-3-small").sync.call(request)
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert len(outcome.response["data"]) == 2 and len(outcome.response["data"][0]["embedding"]) == 1536
    assert outcome.usage.input_tokens > 0 and outcome.usage.output_tokens == 0


def test_anthropic_messages_sync_and_async(clients):
    """Messages calls over the Anthropic protocol succeed with usage, sync and async."""
    lane = clients.for_model("claude-haiku-4-5").sync
    outcomes = [lane.call(message("m-1")), asyncio.run(lane.acall(message("m-2", "Say hello")))]
    for outcome in outcomes:
        assert outcome.kind is OutcomeKind.SUCCEEDED
        assert outcome.response["type"] == "message"
        assert outcome.usage.input_tokens > 0 and outcome.usage.output_tokens > 0


def test_run_many_over_loopback(clients):
    """run_many answers 40 chat calls in order at concurrency 8."""
    requests = [chat(f"r-{i}", f"Item {i}: classify this sentence.") for i in range(40)]
    outcomes = asyncio.run(clients.for_model("gpt-5.4-mini").sync.run_many(requests, concurrency=8))
    assert [o.custom_id for o in outcomes] == [r.custom_id for r in requests]
    assert all(o.kind is OutcomeKind.SUCCEEDED for o in outcomes)


def test_429_burst_is_waited_out_with_the_emulators_retry_after(emu, clients, clock):
    """Two 429s with Retry-After 3 s are each waited out for exactly 3 s (virtual), then the call succeeds."""
    emu.set_profile({"sync_429_burst": 2, "retry_after_seconds": 3})
    before = emu.stats()["sync_requests"]
    # The emulator counts attempts per distinct body, so this body must be new to it.
    outcome = clients.for_model("gpt-5.4-mini").sync.call(chat("burst-1", "A body no other test sends."))
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert clock.sleeps == [3.0, 3.0]
    assert emu.stats()["sync_requests"] == before + 1


def test_429_burst_across_run_many_pauses_the_model_and_everything_succeeds(emu, clients, clock):
    """Under a 429 burst every item of run_many still succeeds; the limiter learned the vendor's stated limit."""
    emu.set_profile({"sync_429_burst": 1, "retry_after_seconds": 2})
    lane = clients.for_model("claude-haiku-4-5").sync
    outcomes = asyncio.run(lane.run_many([message(f"b-{i}", f"Prompt {i}") for i in range(12)], concurrency=4))
    assert all(o.kind is OutcomeKind.SUCCEEDED for o in outcomes)
    assert 2.0 in clock.sleeps
    assert lane.limiters.for_model("claude-haiku-4-5").requests_per_minute == 100_000


def test_persistent_5xx_is_a_retryable_failed_outcome(emu, clients, clock):
    """With every sync call failing 500, the item ends FAILED 500 after max_attempts, marked retryable."""
    emu.set_profile({"sync_5xx_rate": 1.0})
    outcome = clients.for_model("gpt-5.4-mini").sync.call(chat("five-hundred", "Persistent failure body."))
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.status_code == 500 and outcome.is_retryable
    assert "injected" in outcome.reason
    assert len(clock.sleeps) == RETRY.max_attempts - 1


def test_intermittent_5xx_is_retried_away(emu, clients):
    """At a 30% 5xx rate, retries make every one of 20 calls succeed."""
    emu.set_profile({"sync_5xx_rate": 0.3, "seed": 7})
    outcomes = asyncio.run(
        clients.for_model("gpt-5.4-mini").sync.run_many([chat(f"flaky-{i}", f"Flaky {i}") for i in range(20)])
    )
    assert all(o.kind is OutcomeKind.SUCCEEDED for o in outcomes)


def test_vendor_rejection_is_a_failed_outcome_with_its_message(clients):
    """A request the emulator rejects (no messages) is FAILED 400 with the vendor's message, sent once."""
    bad = LLMRequest("bad-1", Endpoint.CHAT, "gpt-5.4-mini", {"messages": []}, lane=Lane.SYNC)
    outcome = clients.for_model("gpt-5.4-mini").sync.call(bad)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.status_code == 400 and "messages" in outcome.reason
    assert not outcome.is_retryable


def test_wrong_key_is_a_401_failure_that_does_not_leak_the_key(emu):
    """A wrong API key gives FAILED 401 with the vendor's message and no trace of the key."""
    registry = ProviderRegistry.for_emulator(emu.base_url, api_key="sk-wrong-SECRET")
    with ProviderClients(registry, retry=NO_WAIT) as clients:
        outcome = clients.for_model("gpt-5.4-mini").sync.call(chat("auth-1"))
    assert outcome.kind is OutcomeKind.FAILED and outcome.status_code == 401
    assert "sk-wrong-SECRET" not in (outcome.reason or "")
