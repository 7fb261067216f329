"""One object per configured provider: its sync lane, its batch lane, one set of connections.

``build_client`` is where a provider config becomes working clients; the ``transport=`` and
``async_transport=`` seams swap the network for an ``httpx.MockTransport`` or an ASGI app, and
``sleep``/``clock``/``retry`` reach every lane so tests never wait.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

import httpx

from batch_pipelines.core.errors import ConfigError
from batch_pipelines.providers.anthropic_sync import AnthropicSyncLane
from batch_pipelines.providers.config import ProviderConfig, ProviderRegistry
from batch_pipelines.providers.http import build_http_client
from batch_pipelines.providers.openai_sync import OpenAISyncLane
from batch_pipelines.providers.ratelimit import RateLimiters
from batch_pipelines.providers.retry import DEFAULT_POLICY, RetryPolicy
from batch_pipelines.providers.sync_lane import SyncLane

_SYNC_LANES: dict[str, type[SyncLane]] = {"openai": OpenAISyncLane, "anthropic": AnthropicSyncLane}
# Batch lanes live in their own modules and are imported when first used.
_BATCH_LANES = {
    "openai": ("batch_pipelines.providers.openai_batch", "OpenAIBatchLane"),
    "anthropic": ("batch_pipelines.providers.anthropic_batch", "AnthropicBatchLane"),
}


class ProviderClient:
    """A provider's lanes over one shared sync HTTP client. Close it (or use ``with``) when done."""

    def __init__(
        self,
        config: ProviderConfig,
        http: httpx.Client,
        sync: SyncLane,
        *,
        retry: RetryPolicy,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.http = http
        self.sync = sync
        self.retry = retry
        self._sleep = sleep
        self._clock = clock
        self._batch: Any = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def batch(self) -> Any:
        """The batch lane (``OpenAIBatchLane`` or ``AnthropicBatchLane``), built on first use."""
        if self._batch is None:
            module_name, class_name = _BATCH_LANES[self.config.protocol]
            try:
                lane_class = getattr(importlib.import_module(module_name), class_name)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(
                    f"the {self.config.protocol} batch lane is not available ({module_name}.{class_name}): {exc}",
                    provider=self.config.name,
                ) from exc
            self._batch = lane_class(self.config, self.http, self.retry, self._sleep, self._clock)
        return self._batch

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
    http = build_http_client(config, transport=transport)
    sync = _SYNC_LANES[config.protocol](
        config,
        http=http,
        async_transport=async_transport,
        retry=retry,
        sleep=sleep,
        clock=clock,
        limiters=RateLimiters(config, clock=clock),
    )
    return ProviderClient(config, http, sync, retry=retry, sleep=sleep, clock=clock)


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
