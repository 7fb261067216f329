"""HTTP clients for one provider: auth headers, timeouts and pool limits from its config.

``transport=`` is the single seam for tests and benchmarks: an ``httpx.MockTransport`` with a
plain function, an ASGI app, or the network. Nothing else in the project builds an httpx client
for a vendor.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import orjson

from batch_pipelines.core.requests import Endpoint
from batch_pipelines.providers.config import ProviderConfig

USER_AGENT = "batch-pipelines/0.1"
# The longest vendor error message we carry into errors and outcomes.
MAX_MESSAGE_CHARS = 500
# Connections per pool of the async client; see ShardedAsyncTransport.
CONNECTIONS_PER_SHARD = 8


def auth_headers(config: ProviderConfig) -> dict[str, str]:
    """The protocol's auth (and version) headers; the key is read from the environment now."""
    key = config.resolve_api_key()
    if config.protocol == "anthropic":
        headers = {"x-api-key": key, "anthropic-version": config.anthropic_version}
    elif config.protocol == "gemini":
        headers = {"x-goog-api-key": key}
    else:
        headers = {"Authorization": f"Bearer {key}"}
    return {"User-Agent": USER_AGENT, **headers, **config.extra_headers}


def _limits(connections: int) -> httpx.Limits:
    # Keep every connection alive: a pool smaller than the concurrency churns TCP connections.
    return httpx.Limits(max_connections=connections, max_keepalive_connections=connections)


def _client_options(config: ProviderConfig) -> dict[str, Any]:
    t = config.timeouts
    return {
        "base_url": config.base_url,
        "headers": auth_headers(config),
        "timeout": httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool),
        "limits": _limits(config.rate_limits.max_concurrency),
        "follow_redirects": False,
    }


def build_http_client(config: ProviderConfig, *, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    return httpx.Client(transport=transport, **_client_options(config))


def build_async_http_client(
    config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The async client; over the network its connections are split into small pools (see below)."""
    if transport is None:
        size = config.rate_limits.max_concurrency
        shards = -(-size // CONNECTIONS_PER_SHARD)
        per_shard = -(-size // shards)
        transport = ShardedAsyncTransport([httpx.AsyncHTTPTransport(limits=_limits(per_shard)) for _ in range(shards)])
    return httpx.AsyncClient(transport=transport, **_client_options(config))


class ShardedAsyncTransport(httpx.AsyncBaseTransport):
    """Spreads requests over several connection pools, each to the one with the fewest in flight.

    httpcore's pool re-examines every connection (a socket-readability system call each) whenever
    a request arrives or a response closes, so one pool of 64 busy connections spends about a
    millisecond of CPU per request on bookkeeping. Eight pools of eight do the same work for an
    eighth of that, which is what lets the sync lane keep up at high concurrency.
    """

    def __init__(self, shards: list[httpx.AsyncBaseTransport]) -> None:
        if not shards:
            raise ValueError("ShardedAsyncTransport needs at least one shard")
        self._shards = shards
        self._in_flight = [0] * len(shards)

    @property
    def in_flight(self) -> tuple[int, ...]:
        return tuple(self._in_flight)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        counts = self._in_flight
        index = counts.index(min(counts))
        counts[index] += 1
        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            counts[index] -= 1
            raise
        response.stream = _ReleasingStream(response.stream, counts, index)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its shard's slot back when it is closed (once)."""

    __slots__ = ("_inner", "_counts", "_index")

    def __init__(self, inner: Any, counts: list[int], index: int | None) -> None:
        self._inner = inner
        self._counts = counts
        self._index = index

    async def __aiter__(self) -> Any:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        index, self._index = self._index, None
        try:
            await self._inner.aclose()
        finally:
            if index is not None:
                self._counts[index] -= 1


def endpoint_path(config: ProviderConfig, endpoint: Endpoint) -> str:
    """The path of ``endpoint`` relative to the provider's base URL.

    OpenAI-compatible base URLs already end in ``/v1`` (or a vendor's equivalent, such as
    Gemini's ``/v1beta/openai``), so the ``/v1`` of the endpoint is dropped there.
    """
    if config.protocol == "anthropic":
        return endpoint.value
    return endpoint.value.removeprefix("/v1")


def vendor_error(response: httpx.Response) -> tuple[str, str | None]:
    """The vendor's error message and code from an error response (both protocols' shapes).

    OpenAI: ``{"error": {"message", "type", "code"}}``; Anthropic: ``{"type": "error",
    "error": {"type", "message"}}``. Anything else falls back to the status line.
    """
    fallback = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    try:
        payload = orjson.loads(response.content)
    except (orjson.JSONDecodeError, httpx.ResponseNotRead):
        return fallback, None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):
        return error[:MAX_MESSAGE_CHARS], None
    if not isinstance(error, dict):
        return fallback, None
    message = error.get("message")
    code = error.get("code") or error.get("type")
    text = str(message)[:MAX_MESSAGE_CHARS] if message else fallback
    return text, str(code) if code is not None else None


def path_segment(vendor_id: str) -> str:
    """A vendor id made safe to put in a URL path: a hostile id cannot climb out (``..``, ``/``, ``?``)."""
    escaped = quote(vendor_id, safe="")
    # quote() keeps dots (they are unreserved), but a segment of only dots means "go up".
    return escaped.replace(".", "%2E") if escaped.strip(".") == "" else escaped


def shown_url(url: httpx.URL) -> str:
    """The URL actually requested, for error messages: no userinfo, no query (signed URLs carry tokens there)."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"
