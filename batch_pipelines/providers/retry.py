"""The one retry policy for every call to a vendor.

What is retried, and why:

- ``408 Request Timeout`` and connection errors/timeouts: the request may never have arrived.
- ``409 Conflict``: vendors use it for lock contention on their side (OpenAI's SDK retries it).
- ``429 Too Many Requests``: a rate limit; the vendor says when to come back (``Retry-After``).
- ``5xx``: the vendor's own failure, usually transient.

Every other status (400, 401, 403, 404, 413, 422, ...) would fail the same way again, so it is
returned (or raised) at once. A server that says otherwise is obeyed, as the official SDKs do
(``_should_retry`` in openai-python and anthropic-sdk-python): ``x-should-retry: true`` retries
any error status, ``x-should-retry: false`` retries none. Waits grow exponentially with jitter, are bounded per wait, in
number of attempts and in total time, and a server hint (``retry-after-ms``, ``Retry-After`` in
seconds or as an HTTP date) replaces the computed wait. ``sleep`` and ``clock`` are injectable
and ``NO_WAIT`` removes every wait, so tests never sleep.

The decision is a pure function (:meth:`RetryPolicy.next_delay`); the two loops below only do I/O.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx

from batch_pipelines.core.errors import ProviderError
from batch_pipelines.providers.http import vendor_error

log = logging.getLogger(__name__)

RETRYABLE_4XX = frozenset({408, 409, 429})
# Not a standard header; OpenAI and Anthropic send it, and their SDKs obey it before the status.
SHOULD_RETRY_HEADER = "x-should-retry"

ResponseHook = Callable[[httpx.Response], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded in attempts and in total seconds."""

    max_attempts: int = 5
    """Attempts in all, the first included (1 means never retry)."""
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_total_seconds: float = 120.0
    """No wait may end later than this many seconds after the first attempt started."""
    jitter: float = 0.25
    """Each computed wait is shortened by a random fraction in [0, jitter) to spread out retry storms."""
    max_retry_after: float = 60.0
    """A server hint longer than this is not waited out: the error goes back to the caller."""
    wait: bool = True
    """False turns every wait into zero (the testing switch; see ``NO_WAIT``)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("initial_delay", "max_delay", "max_total_seconds", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")

    @staticmethod
    def retryable_status(status_code: int) -> bool:
        return status_code in RETRYABLE_4XX or 500 <= status_code <= 599

    @classmethod
    def should_retry(cls, response: httpx.Response) -> bool:
        """Whether an error response deserves another attempt: the server's ``x-should-retry`` first."""
        if response.status_code < 400:
            return False
        directive = response.headers.get(SHOULD_RETRY_HEADER)
        if directive == "true":
            return True
        if directive == "false":
            return False
        return cls.retryable_status(response.status_code)

    def backoff(self, retry_number: int, rand: float) -> float:
        """Computed wait before retry ``retry_number`` (1-based), with ``rand`` in [0, 1)."""
        base = min(self.initial_delay * 2.0 ** min(retry_number - 1, 64), self.max_delay)
        return base * (1.0 - self.jitter * rand)

    def next_delay(self, *, attempt: int, elapsed: float, hint: float | None, rand: float) -> float | None:
        """Seconds to wait before the next attempt, or None to stop.

        ``attempt`` is the number of attempts made so far; ``elapsed`` the seconds since the first
        started; ``hint`` the server's Retry-After in seconds, if it sent one.
        """
        if attempt >= self.max_attempts:
            return None
        if not self.wait:
            return 0.0
        if hint is not None:
            if hint > self.max_retry_after:
                return None
            delay = hint
        else:
            delay = self.backoff(attempt, rand)
        if elapsed + delay > self.max_total_seconds:
            return None
        return delay


DEFAULT_POLICY = RetryPolicy()
NO_WAIT = RetryPolicy(wait=False)
"""Same attempts, no waiting: for tests and for runs against the emulator at ``time_scale=0``."""


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, or None if it did not say (or said it unreadably).

    Prefers ``retry-after-ms``, then ``Retry-After`` as (possibly fractional) seconds, then
    ``Retry-After`` as an HTTP date. The date is measured against the response's own ``Date``
    header when present (immune to clock skew), else against ``now`` (epoch seconds, default
    the wall clock). A date in the past means "now": 0.
    """
    if not isinstance(headers, httpx.Headers):
        headers = httpx.Headers(headers)
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    date = _http_date(headers.get("retry-after"))
    if date is None:
        return None
    reference = _http_date(headers.get("date"))
    if reference is None:
        reference = time.time() if now is None else now
    return max(0.0, date - reference)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else float(email.utils.mktime_tz(parsed))
    except (TypeError, ValueError, OverflowError):
        return None


def _status_error(response: httpx.Response, attempts: int, hint: float | None) -> ProviderError:
    message, code = vendor_error(response)
    path = response.request.url.path
    return ProviderError(
        f"{response.request.method} {path} failed with HTTP {response.status_code}"
        f"{f' after {attempts} attempts' if attempts > 1 else ''}: {message}",
        status_code=response.status_code,
        error_code=code,
        vendor_message=message,
        attempts=attempts,
        retry_after=hint,
    )


def _transport_error(request: httpx.Request, exc: httpx.TransportError, attempts: int) -> ProviderError:
    # str(exc) names the failure (refused, timed out); the URL carries no secret, but the path is enough.
    reason = str(exc) or type(exc).__name__
    return ProviderError(
        f"{request.method} {request.url.path} could not reach {request.url.host} after {attempts} "
        f"attempt{'s' if attempts > 1 else ''}: {type(exc).__name__}: {reason}",
        status_code=None,
        error_code="connection_error",
        attempts=attempts,
    )


def _finish(response: httpx.Response, attempts: int, hint: float | None, raise_for_status: bool) -> httpx.Response:
    if response.is_success or not raise_for_status:
        return response
    raise _status_error(response, attempts, hint)


def _log_retry(request: httpx.Request, reason: str, attempt: int, delay: float) -> None:
    # Method and path only: the query string and headers may carry a key (Gemini's ?key=).
    log.info("%s %s: %s on attempt %d, retrying in %.1f s", request.method, request.url.path, reason, attempt, delay)


def send_with_retry(
    client: httpx.Client,
    build_request: Callable[[], httpx.Request],
    policy: RetryPolicy = DEFAULT_POLICY,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    stream: bool = False,
    raise_for_status: bool = True,
    on_response: ResponseHook | None = None,
    rand: Callable[[], float] = random.random,
) -> httpx.Response:
    """Send the request ``build_request`` makes (afresh per attempt), retrying per ``policy``.

    Returns the first non-retryable response. With ``raise_for_status`` (the default) an error
    status raises ``ProviderError`` carrying the vendor's message; without it the last response
    is returned as is. Connection errors that outlive the policy raise ``ProviderError``
    (status_code None). ``on_response`` sees every response, retried ones included (the rate
    limiter learns from them). With ``stream=True`` the successful response is returned unread.
    """
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        request = build_request()
        try:
            response = client.send(request, stream=stream)
        except httpx.TransportError as exc:
            delay = policy.next_delay(attempt=attempt, elapsed=clock() - started, hint=None, rand=rand())
            if delay is None:
                raise _transport_error(request, exc, attempt) from exc
            _log_retry(request, f"{type(exc).__name__}", attempt, delay)
            sleep(delay)
            continue
        if on_response is not None:
            on_response(response)
        if not policy.should_retry(response):
            if stream and not response.is_success:
                response.read()
            return _finish(response, attempt, None, raise_for_status)
        hint = parse_retry_after(response.headers)
        delay = policy.next_delay(attempt=attempt, elapsed=clock() - started, hint=hint, rand=rand())
        if delay is None:
            if stream:
                response.read()
            return _finish(response, attempt, hint, raise_for_status)
        response.close()
        _log_retry(request, f"HTTP {response.status_code}", attempt, delay)
        sleep(delay)


async def asend_with_retry(
    client: httpx.AsyncClient,
    build_request: Callable[[], httpx.Request],
    policy: RetryPolicy = DEFAULT_POLICY,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    stream: bool = False,
    raise_for_status: bool = True,
    on_response: ResponseHook | None = None,
    rand: Callable[[], float] = random.random,
) -> httpx.Response:
    """The async twin of :func:`send_with_retry` (``sleep`` is awaited)."""
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        request = build_request()
        try:
            response = await client.send(request, stream=stream)
        except httpx.TransportError as exc:
            delay = policy.next_delay(attempt=attempt, elapsed=clock() - started, hint=None, rand=rand())
            if delay is None:
                raise _transport_error(request, exc, attempt) from exc
            _log_retry(request, f"{type(exc).__name__}", attempt, delay)
            await sleep(delay)
            continue
        if on_response is not None:
            on_response(response)
        if not policy.should_retry(response):
            if stream and not response.is_success:
                await response.aread()
            return _finish(response, attempt, None, raise_for_status)
        hint = parse_retry_after(response.headers)
        delay = policy.next_delay(attempt=attempt, elapsed=clock() - started, hint=hint, rand=rand())
        if delay is None:
            if stream:
                await response.aread()
            return _finish(response, attempt, hint, raise_for_status)
        await response.aclose()
        _log_retry(request, f"HTTP {response.status_code}", attempt, delay)
        await sleep(delay)
