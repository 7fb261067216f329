"""ProviderClient: one object per provider with its lanes, built from config with injectable seams."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from batch_pipelines.core.errors import ConfigError
from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.providers.anthropic_batch import AnthropicBatchLane
from batch_pipelines.providers.anthropic_sync import AnthropicSyncLane
from batch_pipelines.providers.client import ProviderClients, build_client
from batch_pipelines.providers.config import ProviderConfig, ProviderRegistry, RateLimits, Timeouts
from batch_pipelines.providers.http import ShardedAsyncTransport, build_async_http_client
from batch_pipelines.providers.openai_batch import OpenAIBatchLane
from batch_pipelines.providers.openai_sync import OpenAISyncLane
from batch_pipelines.providers.retry import NO_WAIT
from batch_pipelines_tests.providers.sync_fakes import VirtualClock, chat_body, message_body

SECRET = "sk-env-SECRET-456"


def config(protocol="openai", **kw) -> ProviderConfig:
    base = "https://vendor.test/v1" if protocol == "openai" else "https://vendor.test"
    return ProviderConfig(
        **{"name": "vendor", "protocol": protocol, "base_url": base, "api_key_env": "VENDOR_KEY", "models": ["*"], **kw}
    )


def test_build_client_reads_the_key_from_the_environment(monkeypatch):
    """The key comes from the named env var when the client is built; a missing one is a ConfigError."""
    monkeypatch.delenv("VENDOR_KEY", raising=False)
    with pytest.raises(ConfigError, match="VENDOR_KEY"):
        build_client(config())
    monkeypatch.setenv("VENDOR_KEY", SECRET)
    seen = []
    transport = httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200, json=chat_body()))
    with build_client(config(), transport=transport) as client:
        request = LLMRequest("a", Endpoint.CHAT, "gpt-4o-mini", {"messages": []}, lane=Lane.SYNC)
        assert client.sync.call(request).kind is OutcomeKind.SUCCEEDED
    assert seen[0].headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(("protocol", "lane_type"), [("openai", OpenAISyncLane), ("anthropic", AnthropicSyncLane)])
def test_protocol_picks_the_sync_lane(protocol, lane_type):
    """An openai provider gets the OpenAI sync lane, an anthropic one the Anthropic lane."""
    client = build_client(config(protocol, api_key="k"))
    assert type(client.sync) is lane_type
    assert client.name == "vendor"
    client.close()


def test_http_client_takes_timeouts_pool_and_headers_from_config():
    """Timeouts, pool size (max_concurrency) and extra headers come from the provider config."""
    cfg = config(
        "anthropic",
        api_key="k",
        timeouts=Timeouts(connect=3, read=45, write=7, pool=2),
        rate_limits=RateLimits(max_concurrency=12),
        extra_headers={"anthropic-beta": "x"},
    )
    client = build_client(cfg)
    assert client.http.timeout == httpx.Timeout(connect=3, read=45, write=7, pool=2)
    pool = client.http._transport._pool  # httpx exposes no public accessor for the pool size
    assert pool._max_connections == 12 and pool._max_keepalive_connections == 12
    assert client.http.headers["anthropic-beta"] == "x"
    assert client.http.headers["anthropic-version"] == "2023-06-01"
    client.close()


def test_injected_sleep_clock_and_retry_reach_the_sync_lane():
    """build_client's retry, sleep and clock are the ones the sync lane uses."""
    clock = VirtualClock()
    script = [
        httpx.Response(529, json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
        httpx.Response(200, json=message_body()),
    ]
    transport = httpx.MockTransport(lambda r: script.pop(0))
    client = build_client(
        config("anthropic", api_key="k"), transport=transport, sleep=clock.sleep, clock=clock, retry=NO_WAIT
    )
    request = LLMRequest("m", Endpoint.MESSAGES, "claude-haiku-4-5", {"max_tokens": 8, "messages": []}, lane=Lane.SYNC)
    assert client.sync.call(request).kind is OutcomeKind.SUCCEEDED
    assert client.sync.retry is NO_WAIT and client.retry is NO_WAIT
    assert clock.sleeps == [0.0]


@pytest.mark.parametrize(("protocol", "lane_type"), [("openai", OpenAIBatchLane), ("anthropic", AnthropicBatchLane)])
def test_batch_lane_is_the_protocols_and_shares_the_http_client(protocol, lane_type):
    """client.batch is the protocol's batch lane, sending over the client's own HTTP connections."""
    client = build_client(config(protocol, api_key="k"))
    assert type(client.batch) is lane_type
    assert client.batch.http is client.http
    client.close()


def test_provider_clients_route_by_model_and_reuse_clients():
    """ProviderClients builds one client per provider on demand and routes models through the registry."""
    registry = ProviderRegistry.for_emulator("http://127.0.0.1:9")
    with ProviderClients(registry, retry=NO_WAIT) as clients:
        openai = clients.for_model("gpt-4o-mini")
        assert openai.name == "emulator-openai"
        assert clients.for_model("text-embedding-3-small") is openai
        assert clients.for_model("claude-sonnet-4-5").name == "emulator-anthropic"


def test_sharded_transport_sends_each_request_to_the_least_busy_pool():
    """Requests go to the pool with the fewest open responses; closing a response frees its slot once."""

    class Body(httpx.AsyncByteStream):
        """An unread body, as the network gives: the response stays open until read or closed."""

        async def __aiter__(self):
            yield b"{}"

    shards = [httpx.MockTransport(lambda r: httpx.Response(200, stream=Body())) for _ in range(3)]
    transport = ShardedAsyncTransport(shards)

    async def scenario() -> list[tuple[int, ...]]:
        seen = []
        request = httpx.Request("POST", "http://vendor.test/v1/chat/completions")
        responses = [await transport.handle_async_request(request) for _ in range(4)]
        seen.append(transport.in_flight)
        await responses[1].aclose()
        await responses[1].aclose()  # a second close must not free a second slot
        seen.append(transport.in_flight)
        responses.append(await transport.handle_async_request(request))
        seen.append(transport.in_flight)
        for response in responses:
            await response.aclose()
        seen.append(transport.in_flight)
        async with httpx.AsyncClient(transport=transport) as client:
            await asyncio.gather(*(client.post("http://vendor.test/v1/embeddings") for _ in range(5)))
        seen.append(transport.in_flight)
        return seen

    assert asyncio.run(scenario()) == [(2, 1, 1), (2, 0, 1), (2, 1, 1), (0, 0, 0), (0, 0, 0)]


def test_sharded_transport_frees_the_slot_when_the_pool_raises():
    """A connection error from a pool does not leave its slot counted as busy."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    transport = ShardedAsyncTransport([httpx.MockTransport(refuse)])
    with pytest.raises(httpx.ConnectError):
        asyncio.run(transport.handle_async_request(httpx.Request("GET", "http://vendor.test/")))
    assert transport.in_flight == (0,)


def test_network_async_client_splits_connections_into_pools_of_eight():
    """Without a transport seam, max_concurrency 64 becomes 8 pools of 8 connections."""
    client = build_async_http_client(config(api_key="k", rate_limits=RateLimits(max_concurrency=64)))
    transport = client._transport  # httpx exposes no public accessor for the transport
    assert isinstance(transport, ShardedAsyncTransport) and len(transport.in_flight) == 8
    asyncio.run(client.aclose())
