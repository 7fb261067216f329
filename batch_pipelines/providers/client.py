"""One object per configured provider: its sync lane, its batch lane, one set of connections.

``build_client`` is where a provider config becomes working clients (the lane classes come from
the protocol's entry in ``providers/lanes.py``); the ``transport=`` and
``async_transport=`` seams swap the network for an ``httpx.MockTransport`` or an ASGI app, and
``sleep``/``clock``/``retry`` reach every lane so tests never wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from batch_pipelines.providers.batch_lane import BatchLane
from batch_pipelines.providers.config import ProviderConfig, ProviderRegistry
from batch_pipelines.providers.http import build_http_client
from batch_pipelines.providers.lanes import lanes_for
from batch_pipelines.providers.ratelimit import RateLimiters
from batch_pipelines.providers.retry import DEFAULT_POLICY, RetryPolicy
from batch_pipelines.providers.sync_lane import SyncLane


class ProviderClient:
    """A provider's lanes over one shared sync HTTP client. Close it (or use ``with``) when done."""

    def __init__(
        self, config: ProviderConfig, http: httpx.Client, sync: SyncLane, batch: BatchLane, *, retry: RetryPolicy
    ) -> None:
        self.config = config
        self.http = http
        self.sync = sync
        self.batch = batch
        self.retry = retry

    @property
    def name(self) -> str:
        return self.config.name

    def close(self) -> None:
        self.sync.close()
        self.http.close()

    async def aclose(self) -> None:
        await self.sync.aclose()
        self.http.close()

    def __enter__(self) -> ProviderClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def build_client(
    config: ProviderConfig,
    *,
    transport: httpx.BaseTransport | None = None,
    async_transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
    retry: RetryPolicy | None = None,
) -> ProviderClient:
    """Clients for one provider; the API key is read from its environment variable now."""
    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    retry = retry or DEFAULT_POLICY
    lanes = lanes_for(config.protocol, provider=config.name)
    http = build_http_client(config, transport=transport)
    sync = lanes.sync(
        config,
        http=http,
        async_transport=async_transport,
        retry=retry,
        sleep=sleep,
        clock=clock,
        limiters=RateLimiters(config, clock=clock),
    )
    batch = lanes.batch(config, http, retry, sleep, clock)
    return ProviderClient(config, http, sync, batch, retry=retry)


class ProviderClients:
    """Clients for every provider of a registry, built on first use, routed by model."""

    def __init__(self, registry: ProviderRegistry, **options: Any) -> None:
        self.registry = registry
        self._options = options
        self._clients: dict[str, ProviderClient] = {}

    def get(self, name: str) -> ProviderClient:
        client = self._clients.get(name)
        if client is None:
            client = build_client(self.registry.get(name), **self._options)
            self._clients[name] = client
        return client

    def for_model(self, model: str) -> ProviderClient:
        return self.get(self.registry.provider_for(model).name)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> ProviderClients:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
