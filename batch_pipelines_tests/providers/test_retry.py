"""The retry policy: what is retried, how long it waits, and when it gives up (sync and async)."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Callable

import httpx
import pytest

from batch_pipelines.core.errors import ProviderError
from batch_pipelines.providers.retry import NO_WAIT, RetryPolicy, asend_with_retry, parse_retry_after, send_with_retry
from batch_pipelines_tests.providers.sync_fakes import VirtualClock, anthropic_error, openai_error

RETRYABLE = [408, 409, 429, 500, 502, 503, 504, 529, 599]
NOT_RETRYABLE = [400, 401, 403, 404, 405, 413, 415, 422]
FIXED = RetryPolicy(max_attempts=5, initial_delay=1.0, max_delay=8.0, max_total_seconds=1000.0, jitter=0.0)
URL = "https://vendor.test/v1/chat/completions"


class Vendor:
    """A MockTransport handler that records every request it is sent."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        self.attempts: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.attempts.append(request)
        return self.handler(request)


def send(mode: str, vendor: Vendor, policy: RetryPolicy, clock: VirtualClock, **kw) -> httpx.Response:
    """One send_with_retry (or asend_with_retry) through a MockTransport."""
    if mode == "sync":
        with httpx.Client(transport=httpx.MockTransport(vendor)) as client:
            build = lambda: client.build_request("POST", URL, json={"n": 1})  # noqa: E731
            return send_with_retry(client, build, policy, sleep=clock.sleep, clock=clock, **kw)

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.MockTransport(vendor)) as client:
            build = lambda: client.build_request("POST", URL, json={"n": 1})  # noqa: E731
            return await asend_with_retry(client, build, policy, sleep=clock.asleep, clock=clock, **kw)

    return asyncio.run(run())


def scripted(*responses: httpx.Response | Exception) -> Vendor:
    """A vendor that answers with the given responses (or raises the given errors) in order, then repeats the last."""
    script = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(item, Exception):
            raise item
        return httpx.Response(item.status_code, headers=item.headers, content=item.content)

    return Vendor(handler)


MODES = ["sync", "async"]


@pytest.mark.parametrize("code", RETRYABLE + NOT_RETRYABLE + [200, 201, 204])
def test_retryable_status_is_exactly_408_409_429_and_5xx(code):
    """Only 408, 409, 429 and 5xx are transient; everything else is final."""
    assert RetryPolicy.retryable_status(code) is (code in RETRYABLE)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", RETRYABLE)
def test_each_retryable_status_is_retried_until_success(mode, code):
    """A retryable status is retried with exponential waits until the vendor answers 200."""
    clock = VirtualClock()
    vendor = scripted(openai_error(code), openai_error(code), httpx.Response(200, json={"ok": True}))
    response = send(mode, vendor, FIXED, clock)
    assert response.status_code == 200
    assert len(vendor.attempts) == 3
    assert clock.sleeps == [1.0, 2.0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", NOT_RETRYABLE)
def test_each_non_retryable_status_raises_at_once_with_the_vendor_message(mode, code):
    """A non-retryable status is sent once and raises ProviderError with the vendor's message and code."""
    clock = VirtualClock()
    vendor = scripted(openai_error(code, "model does not exist", "model_not_found"))
    with pytest.raises(ProviderError) as caught:
        send(mode, vendor, FIXED, clock)
    assert len(vendor.attempts) == 1
    assert clock.sleeps == []
    assert caught.value.status_code == code
    assert "model does not exist" in caught.value.message
    assert caught.value.details["error_code"] == "model_not_found"


@pytest.mark.parametrize("mode", MODES)
def test_anthropic_error_shape_gives_message_and_type(mode):
    """Anthropic's {"type":"error","error":{type,message}} body is read for the message and code."""
    with pytest.raises(ProviderError) as caught:
        send(
            mode,
            scripted(anthropic_error(400, "max_tokens: field required", "invalid_request_error")),
            FIXED,
            VirtualClock(),
        )
    assert caught.value.details["vendor_message"] == "max_tokens: field required"
    assert caught.value.details["error_code"] == "invalid_request_error"


@pytest.mark.parametrize("mode", MODES)
def test_without_raise_for_status_the_final_error_response_is_returned(mode):
    """raise_for_status=False hands back the last response instead of raising."""
    vendor = scripted(openai_error(404))
    response = send(mode, vendor, FIXED, VirtualClock(), raise_for_status=False)
    assert response.status_code == 404
    assert len(vendor.attempts) == 1


@pytest.mark.parametrize("mode", MODES)
def test_exhausted_attempts_raise_with_the_last_status(mode):
    """An endless 503 stops after max_attempts and raises with status 503 and the attempt count."""
    clock = VirtualClock()
    vendor = scripted(openai_error(503, "overloaded"))
    with pytest.raises(ProviderError) as caught:
        send(mode, vendor, FIXED, clock)
    assert len(vendor.attempts) == 5
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0]
    assert caught.value.status_code == 503
    assert caught.value.details["attempts"] == 5
    assert "after 5 attempts" in caught.value.message


@pytest.mark.parametrize("mode", MODES)
def test_total_time_budget_stops_retries_before_the_attempt_limit(mode):
    """No wait may end past max_total_seconds: waits of 1 and 2 fit in 4 s, the next (4) does not."""
    clock = VirtualClock()
    policy = RetryPolicy(max_attempts=10, initial_delay=1.0, max_delay=60, max_total_seconds=4.0, jitter=0.0)
    vendor = scripted(openai_error(500))
    with pytest.raises(ProviderError):
        send(mode, vendor, policy, clock)
    assert clock.sleeps == [1.0, 2.0]
    assert len(vendor.attempts) == 3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("headers", "expected_wait"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        (
            {
                "retry-after": email.utils.formatdate(1_700_000_030, usegmt=True),
                "date": email.utils.formatdate(1_700_000_000, usegmt=True),
            },
            30.0,
        ),
    ],
)
def test_retry_after_hint_replaces_the_computed_wait(mode, headers, expected_wait):
    """retry-after-ms, Retry-After seconds and Retry-After HTTP-date are each waited out exactly."""
    clock = VirtualClock()
    response = send(mode, scripted(openai_error(429, **headers), httpx.Response(200)), FIXED, clock)
    assert response.status_code == 200
    assert clock.sleeps == [pytest.approx(expected_wait)]


@pytest.mark.parametrize("mode", MODES)
def test_retry_after_on_503_is_honoured_too(mode):
    """A 503 with Retry-After waits the hint, not the backoff."""
    clock = VirtualClock()
    send(mode, scripted(openai_error(503, **{"retry-after": "3"}), httpx.Response(200)), FIXED, clock)
    assert clock.sleeps == [3.0]


@pytest.mark.parametrize("mode", MODES)
def test_hint_longer_than_max_retry_after_is_returned_to_the_caller(mode):
    """A Retry-After beyond max_retry_after is not slept through: the 429 raises, carrying the hint."""
    clock = VirtualClock()
    with pytest.raises(ProviderError) as caught:
        send(mode, scripted(openai_error(429, **{"retry-after": "3600"})), FIXED, clock)
    assert clock.sleeps == []
    assert caught.value.status_code == 429
    assert caught.value.details["retry_after"] == 3600.0


@pytest.mark.parametrize("mode", MODES)
def test_hint_that_would_break_the_total_budget_stops(mode):
    """A hint that would end past max_total_seconds stops retrying instead of overrunning."""
    clock = VirtualClock()
    policy = RetryPolicy(max_total_seconds=10.0, jitter=0.0)
    with pytest.raises(ProviderError):
        send(mode, scripted(openai_error(429, **{"retry-after": "30"})), policy, clock)
    assert clock.sleeps == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.ConnectTimeout("timed out"),
    ],
)
def test_connection_errors_are_retried(mode, error):
    """Connect/read errors and timeouts are retried like a 5xx."""
    clock = VirtualClock()
    vendor = scripted(error, error, httpx.Response(200))
    response = send(mode, vendor, FIXED, clock)
    assert response.status_code == 200
    assert len(vendor.attempts) == 3
    assert clock.sleeps == [1.0, 2.0]


@pytest.mark.parametrize("mode", MODES)
def test_connection_errors_that_outlive_the_policy_raise_provider_error(mode):
    """Exhausted connection retries raise ProviderError(status None, error_code connection_error)."""
    with pytest.raises(ProviderError) as caught:
        send(mode, scripted(httpx.ConnectError("connection refused")), FIXED, VirtualClock())
    assert caught.value.status_code is None
    assert caught.value.details["error_code"] == "connection_error"
    assert "vendor.test" in caught.value.message and "ConnectError" in caught.value.message
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("mode", MODES)
def test_no_wait_policy_ignores_hints_and_backoff(mode):
    """NO_WAIT keeps the attempts but never waits, even when the server asks for 30 s."""
    clock = VirtualClock()
    vendor = scripted(openai_error(429, **{"retry-after": "30"}), openai_error(500), httpx.Response(200))
    response = send(mode, vendor, NO_WAIT, clock)
    assert response.status_code == 200
    assert len(vendor.attempts) == 3
    assert all(wait == 0 for wait in clock.sleeps)


@pytest.mark.parametrize("mode", MODES)
def test_every_attempt_builds_a_fresh_request(mode):
    """build_request is called once per attempt (a consumed body is never resent)."""
    vendor = Vendor(lambda request: openai_error(500) if len(vendor.attempts) < 3 else httpx.Response(200))
    send(mode, vendor, FIXED, VirtualClock())
    assert len({id(request) for request in vendor.attempts}) == 3


@pytest.mark.parametrize("mode", MODES)
def test_on_response_sees_every_response_including_retried_ones(mode):
    """The on_response hook observes each response, so a limiter can learn from 429s."""
    seen: list[int] = []
    vendor = scripted(openai_error(429), openai_error(502), httpx.Response(200))
    send(mode, vendor, FIXED, VirtualClock(), on_response=lambda r: seen.append(r.status_code))
    assert seen == [429, 502, 200]


@pytest.mark.parametrize("mode", MODES)
def test_streamed_error_response_is_read_for_its_message(mode):
    """With stream=True an error body is still read, so the vendor's message reaches the error."""
    with pytest.raises(ProviderError) as caught:
        send(mode, scripted(openai_error(400, "bad file")), FIXED, VirtualClock(), stream=True)
    assert "bad file" in caught.value.message


def test_api_key_never_appears_in_errors():
    """Neither a status error nor a connection error repeats the Authorization header."""
    secret = "sk-test-SECRET-123"
    for handler in (scripted(openai_error(401, "invalid key")), scripted(httpx.ConnectError("refused"))):
        auth = {"Authorization": f"Bearer {secret}"}
        with (
            httpx.Client(transport=httpx.MockTransport(handler), headers=auth) as client,
            pytest.raises(ProviderError) as caught,
        ):
            send_with_retry(client, lambda: client.build_request("POST", URL), NO_WAIT, sleep=lambda s: None)
        assert secret not in str(caught.value) and secret not in repr(caught.value.details)


def test_backoff_doubles_caps_and_jitters_within_bounds():
    """Waits double from initial_delay, stop growing at max_delay, and jitter only shortens them."""
    policy = RetryPolicy(initial_delay=0.5, max_delay=4.0, jitter=0.25)
    assert [policy.backoff(n, 0.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.backoff(2, 0.999) == pytest.approx(1.0 * (1 - 0.25 * 0.999))
    assert policy.backoff(1000, 0.0) == 4.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_attempts": 0}, "max_attempts"), ({"jitter": 1.5}, "jitter"), ({"initial_delay": -1}, "initial_delay")],
)
def test_policy_rejects_nonsense(kwargs, message):
    """A policy that could never work is refused when built."""
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "2"}, 2.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"Retry-After-Ms": "20"}, 0.02),
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 60.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:26:00 GMT"}, 0.0),
        (
            {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT", "date": "Wed, 21 Oct 2015 07:27:50 GMT"},
            10.0,
        ),
    ],
)
def test_parse_retry_after(headers, expected):
    """Both Retry-After forms and retry-after-ms parse to seconds; junk and negatives are ignored."""
    now = email.utils.mktime_tz(email.utils.parsedate_tz("Wed, 21 Oct 2015 07:27:00 GMT"))
    assert parse_retry_after(headers, now=now) == (pytest.approx(expected) if expected is not None else None)


def _with_should_retry(response: httpx.Response, directive: str) -> httpx.Response:
    return httpx.Response(response.status_code, headers={"x-should-retry": directive}, content=response.content)


@pytest.mark.parametrize("mode", MODES)
def test_x_should_retry_true_retries_a_status_that_is_otherwise_final(mode):
    """A 400 with x-should-retry: true is retried, as the official SDKs do."""
    clock = VirtualClock()
    vendor = scripted(_with_should_retry(openai_error(400), "true"), httpx.Response(200, json={"ok": True}))
    assert send(mode, vendor, FIXED, clock).status_code == 200
    assert len(vendor.attempts) == 2


@pytest.mark.parametrize("mode", MODES)
def test_x_should_retry_false_stops_a_retryable_status_at_once(mode):
    """A 503 with x-should-retry: false is not retried: the server knows the retry would fail too."""
    clock = VirtualClock()
    vendor = scripted(_with_should_retry(openai_error(503, "overloaded"), "false"))
    with pytest.raises(ProviderError) as caught:
        send(mode, vendor, FIXED, clock)
    assert len(vendor.attempts) == 1 and clock.sleeps == []
    assert caught.value.status_code == 503
