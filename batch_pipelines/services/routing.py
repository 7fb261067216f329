"""Which provider serves a request, and one client per provider for the gateway's lifetime."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from batch_pipelines.core.requests import LLMRequest
from batch_pipelines.providers.client import ProviderClient, build_client
from batch_pipelines.providers.config import ProviderConfig, ProviderRegistry

ClientFactory = Callable[[ProviderConfig], ProviderClient]


class ProviderRouter:
    """Routes models to providers and caches each provider's client (one set of connections)."""

    def __init__(self, registry: ProviderRegistry, client_factory: ClientFactory = build_client) -> None:
        self.registry = registry
        self._client_factory = client_factory
        self._clients: dict[str, ProviderClient] = {}

    def client(self, provider: str) -> ProviderClient:
        if provider not in self._clients:
            self._clients[provider] = self._client_factory(self.registry.get(provider))
        return self._clients[provider]

    def client_for_model(self, model: str) -> ProviderClient:
        return self.client(self.registry.provider_for(model).name)

    def by_provider(self, requests: Iterable[LLMRequest]) -> list[tuple[str, list[LLMRequest]]]:
        """The requests grouped by the provider serving their model, providers in name order.

        A partition may mix providers; each gets its own batches. A fixed order keeps a resumed
        submission walking the shares as the first one did.
        """
        shares: dict[str, list[LLMRequest]] = defaultdict(list)
        for request in requests:
            shares[self.registry.provider_for(request.model).name].append(request)
        return sorted(shares.items())

    def shares(
        self, requests: Iterable[LLMRequest], *, models: Iterable[str]
    ) -> Iterator[tuple[str, Iterable[LLMRequest]]]:
        """Like ``by_provider``, for a re-iterable ``requests`` whose ``models`` are known: one
        provider's share is ``requests`` itself (nothing copied); several filter it, a pass each."""
        providers = sorted({self.registry.provider_for(model).name for model in models})
        if len(providers) == 1:
            yield providers[0], requests
            return
        for provider in providers:
            yield provider, (r for r in requests if self.registry.provider_for(r.model).name == provider)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
