"""The synchronous lane, protocol-neutral part: one request in, one ``ItemOutcome`` out.

Each call passes the model's rate limiter, then the retry policy; the response is parsed once,
here at the edge, into an ``ItemOutcome`` with ``Usage``. A vendor refusal (a non-retryable
status, or a retryable one that outlived the policy) is an outcome of kind FAILED carrying the
vendor's message and status, not an exception: one bad item must not sink its neighbours in
``run_many``. Only bad input (caught before anything is sent) raises.

``SyncLane`` is the contract the services call (``call``, ``acall``, ``run_many``, ``close``,
``aclose``); a protocol's subclass says which endpoints it serves and writes the two abstract
hooks: how to read usage from a body, and how to estimate a request's tokens for the limiter.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import orjson

from batch_pipelines.core.errors import InvalidInputError, MalformedResponseError, ProviderError
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.core.usage import ZERO_USAGE, Usage
from batch_pipelines.providers.config import ProviderConfig
from batch_pipelines.providers.http import build_async_http_client, build_http_client, endpoint_path, vendor_error
from batch_pipelines.providers.ratelimit import RateLimiter, RateLimiters
from batch_pipelines.providers.retry import DEFAULT_POLICY, RetryPolicy, asend_with_retry, send_with_retry

_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(slots=True)
class _AsyncState:
    """Async resources bound to one event loop (httpx pools and semaphores cannot cross loops)."""

    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    slots: asyncio.Semaphore


class SyncLane(ABC):
    """Chat/embeddings/messages calls to one provider, sync and async, rate limited and retried."""

    protocol: ClassVar[str]
    endpoints: ClassVar[frozenset[Endpoint]]

    def __init__(
        self,
        config: ProviderConfig,
        *,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy = DEFAULT_POLICY,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
        limiters: RateLimiters | None = None,
    ) -> None:
        if config.protocol != self.protocol:
            raise ValueError(
                f"{type(self).__name__} speaks {self.protocol!r}; provider {config.name!r} is {config.protocol!r}"
            )
        self.config = config
        self.retry = retry
        self._clock = clock or time.monotonic
        self._sleep = sleep or time.sleep
        self._asleep = _async_sleep(sleep)
        self._owns_http = http is None
        self._http = http
        self._transport = transport
        self._async_transport = async_transport
        self._astate: _AsyncState | None = None
        self.limiters = limiters or RateLimiters(config, clock=self._clock)
        self._paths = {endpoint: endpoint_path(config, endpoint) for endpoint in self.endpoints}

    # -- protocol hooks -------------------------------------------------------------------

    @abstractmethod
    def parse_usage(self, endpoint: Endpoint, body: Mapping[str, Any]) -> Usage | None:
        """The usage a successful response body reports, or None if it reports none."""

    @abstractmethod
    def estimate_tokens(self, request: LLMRequest) -> int:
        """Tokens the request will count against the model's token rate limit (an estimate)."""

    # -- public API -----------------------------------------------------------------------

    def call(self, request: LLMRequest) -> ItemOutcome:
        """Send one request and wait for its outcome (blocking)."""
        path, content = self._prepare(request)
        limiter = self.limiters.for_model(request.model)
        estimate = self.estimate_tokens(request) if limiter.counts_tokens else 0
        limiter.acquire(estimate, sleep=self._sleep)
        client = self._sync_client()
        try:
            response = send_with_retry(
                client,
                lambda: client.build_request("POST", path, content=content, headers=_JSON_HEADERS),
                self.retry,
                sleep=self._sleep,
                clock=self._clock,
                raise_for_status=False,
                on_response=_observer(limiter),
            )
        except ProviderError as exc:
            return _unreachable(request, exc)
        return self._settled(limiter, estimate, self._outcome(request, response))

    async def acall(self, request: LLMRequest) -> ItemOutcome:
        """Send one request and await its outcome."""
        return await self._acall(request, self._prepare(request))

    async def run_many(self, requests: Iterable[LLMRequest], *, concurrency: int | None = None) -> list[ItemOutcome]:
        """Outcomes of every request, in input order, with at most ``concurrency`` in flight.

        Every request is checked before the first is sent. The provider's
        ``rate_limits.max_concurrency`` bounds in-flight calls across all callers of this lane.
        """
        if concurrency is not None and concurrency < 1:
            raise InvalidInputError(f"concurrency must be at least 1, got {concurrency}")
        items = list(requests)
        prepared = [self._prepare(request) for request in items]
        results: list[ItemOutcome | None] = [None] * len(items)
        workers = min(concurrency or self.config.rate_limits.max_concurrency, len(items))
        if workers == 0:
            return []
        queue = iter(range(len(items)))

        async def worker() -> None:
            for index in queue:
                results[index] = await self._acall(items[index], prepared[index])

        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
        return results  # type: ignore[return-value]  # every slot was filled

    def close(self) -> None:
        if self._owns_http and self._http is not None:
            self._http.close()
            self._http = None
        # An async client bound to a finished loop cannot be awaited closed; dropping it is all we can do.
        self._astate = None

    async def aclose(self) -> None:
        state, self._astate = self._astate, None
        if state is not None and state.loop is asyncio.get_running_loop():
            await state.client.aclose()
        self.close()

    # -- internals ------------------------------------------------------------------------

    async def _acall(self, request: LLMRequest, prepared: tuple[str, bytes]) -> ItemOutcome:
        path, content = prepared
        limiter = self.limiters.for_model(request.model)
        estimate = self.estimate_tokens(request) if limiter.counts_tokens else 0
        await limiter.aacquire(estimate, sleep=self._asleep)
        state = self._async_state()
        client = state.client
        async with state.slots:
            try:
                response = await asend_with_retry(
                    client,
                    lambda: client.build_request("POST", path, content=content, headers=_JSON_HEADERS),
                    self.retry,
                    sleep=self._asleep,
                    clock=self._clock,
                    raise_for_status=False,
                    on_response=_observer(limiter),
                )
            except ProviderError as exc:
                return _unreachable(request, exc)
        return self._settled(limiter, estimate, self._outcome(request, response))

    def _prepare(self, request: LLMRequest) -> tuple[str, bytes]:
        """Check a request and serialise its body once (retries resend the same bytes)."""
        path = self._paths.get(request.endpoint)
        if path is None:
            served = ", ".join(sorted(e.value for e in self.endpoints))
            raise InvalidInputError(
                f"request {request.custom_id!r}: provider {self.config.name!r} ({self.protocol} protocol) "
                f"cannot serve {request.endpoint.value}; it serves {served}",
                custom_id=request.custom_id,
            )
        if not isinstance(request.body, Mapping):
            raise InvalidInputError(
                f"request {request.custom_id!r}: body must be a JSON object", custom_id=request.custom_id
            )
        if request.body.get("stream"):
            raise InvalidInputError(
                f"request {request.custom_id!r}: streaming is not supported on the sync lane; drop 'stream'",
                custom_id=request.custom_id,
            )
        try:
            content = orjson.dumps({**request.body, "model": request.model})
        except TypeError as exc:
            raise InvalidInputError(
                f"request {request.custom_id!r}: body is not JSON-serialisable ({exc})", custom_id=request.custom_id
            ) from None
        return path, content

    def _outcome(self, request: LLMRequest, response: httpx.Response) -> ItemOutcome:
        if not response.is_success:
            message, code = vendor_error(response)
            return ItemOutcome(
                request.custom_id,
                OutcomeKind.FAILED,
                reason=message,
                status_code=response.status_code,
                error_code=code,
                model=request.model,
            )
        try:
            body = orjson.loads(response.content)
            if not isinstance(body, dict):
                raise MalformedResponseError(f"expected a JSON object, got {type(body).__name__}")
            usage = self.parse_usage(request.endpoint, body)
        except (orjson.JSONDecodeError, MalformedResponseError) as exc:
            return ItemOutcome(
                request.custom_id,
                OutcomeKind.FAILED,
                reason=f"malformed response from {self.config.name}: {exc}",
                status_code=response.status_code,
                error_code="malformed_response",
                model=request.model,
            )
        model = body.get("model")
        return ItemOutcome(
            request.custom_id,
            OutcomeKind.SUCCEEDED,
            reason=None if usage is not None else "the response reported no usage",
            usage=usage if usage is not None else ZERO_USAGE,
            response=body,
            status_code=response.status_code,
            model=model if isinstance(model, str) else request.model,
        )

    @staticmethod
    def _settled(limiter: RateLimiter, estimate: int, outcome: ItemOutcome) -> ItemOutcome:
        if estimate and outcome.kind is OutcomeKind.SUCCEEDED:
            limiter.settle(estimate, outcome.usage.total_tokens)
        return outcome

    def _sync_client(self) -> httpx.Client:
        if self._http is None:
            self._http = build_http_client(self.config, transport=self._transport)
            self._owns_http = True
        return self._http

    def _async_state(self) -> _AsyncState:
        loop = asyncio.get_running_loop()
        state = self._astate
        if state is None or state.loop is not loop:
            state = _AsyncState(
                loop,
                build_async_http_client(self.config, transport=self._async_transport),
                asyncio.Semaphore(self.config.rate_limits.max_concurrency),
            )
            self._astate = state
        return state


def _observer(limiter: RateLimiter) -> Callable[[httpx.Response], None]:
    return lambda response: limiter.observe(response.status_code, response.headers)


def _unreachable(request: LLMRequest, exc: ProviderError) -> ItemOutcome:
    return ItemOutcome(
        request.custom_id,
        OutcomeKind.FAILED,
        reason=exc.message,
        status_code=exc.status_code,
        error_code=exc.details.get("error_code") or "connection_error",
        model=request.model,
    )


def _async_sleep(sleep: Callable[[float], None] | None) -> Callable[[float], Any]:
    """An awaitable sleep: asyncio's, or the injected (fake) one followed by a yield to the loop."""
    if sleep is None:
        return asyncio.sleep

    async def injected(seconds: float) -> None:
        sleep(seconds)
        await asyncio.sleep(0)

    return injected


def int_field(payload: Mapping[str, Any], name: str) -> int:
    """A token count from a usage object: absent or null is 0; anything but a whole number is malformed."""
    value = payload.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedResponseError(f"usage field {name!r} is {value!r}, not a token count")
    return value


def mapping_field(payload: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = payload.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedResponseError(f"field {name!r} is {type(value).__name__}, not an object")
    return value


def build_usage(**counts: int) -> Usage:
    try:
        return Usage(**counts)
    except ValueError as exc:
        raise MalformedResponseError(f"inconsistent usage: {exc}") from None
