"""Core values refuse impossible states and parse human quantities."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.quantities import parse_fraction, parse_token_count
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.core.usage import Usage


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30M", 30_000_000), ("500k", 500_000), ("1.5m", 1_500_000), ("42", 42), ("2B", 2_000_000_000), ("1_000", 1000)],
)
def test_token_counts_accept_suffixes(text, expected):
    """Token counts accept k, M and B suffixes."""
    assert parse_token_count(text) == expected


@pytest.mark.parametrize("text", ["-5", "abc", "1.2345k", "", "5 tokens"])
def test_bad_token_counts_are_refused(text):
    """Negative, fractional and non-numeric token counts are refused."""
    with pytest.raises(ValueError):
        parse_token_count(text)


def test_fractions_accept_percent_and_enforce_bounds():
    """'15%' is 0.15; 1 and above are refused for a discount."""
    assert parse_fraction("15%", name="d") == Decimal("0.15")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        parse_fraction("1", name="d")


def test_usage_adds_and_derives_uncached_input():
    """Usage sums field by field; uncached input excludes cache reads and writes."""
    total = Usage(100, 40, 10, 5, 1) + Usage(50, 0, 0, 5, 0)
    assert total == Usage(150, 40, 10, 10, 1)
    assert total.uncached_input_tokens == 100


@pytest.mark.parametrize("kwargs", [{"input_tokens": -1}, {"input_tokens": 10, "cached_input_tokens": 11}])
def test_usage_refuses_impossible_counts(kwargs):
    """Negative counts and more cached than total input are refused."""
    with pytest.raises(ValueError):
        Usage(**kwargs)


@pytest.mark.parametrize("custom_id", ["", "has space", "x" * 65, "dots.not.allowed"])
def test_request_custom_id_must_be_portable(custom_id):
    """custom_id follows the strictest vendor rule (Anthropic's) so it is valid everywhere."""
    with pytest.raises(InvalidInputError, match="custom_id"):
        LLMRequest(custom_id=custom_id, endpoint=Endpoint.CHAT, model="gpt-5.4", body={})


def test_request_deadline_must_be_timezone_aware():
    """A naive deadline is ambiguous and refused."""
    with pytest.raises(InvalidInputError, match="naive deadline"):
        LLMRequest("a", Endpoint.CHAT, "gpt-5.4", {}, deadline=datetime(2026, 1, 1))
    LLMRequest("a", Endpoint.CHAT, "gpt-5.4", {}, deadline=datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("kind", "status", "retryable"),
    [
        (OutcomeKind.EXPIRED, None, True),
        (OutcomeKind.CANCELLED, None, True),
        (OutcomeKind.MISSING, None, True),
        (OutcomeKind.FAILED, 500, True),
        (OutcomeKind.FAILED, 429, True),
        (OutcomeKind.FAILED, 400, False),
        (OutcomeKind.FAILED, None, False),
        (OutcomeKind.SUCCEEDED, 200, False),
        (OutcomeKind.INVALID_OUTPUT, 200, False),
    ],
)
def test_outcome_retryability(kind, status, retryable):
    """Expired, cancelled, missing and transient failures may be retried; 400-class failures may not."""
    assert ItemOutcome("a", kind, status_code=status).is_retryable is retryable


def test_unreached_vendor_is_a_retryable_failure():
    """A connection error (no HTTP status) is transient."""
    assert ItemOutcome("a", OutcomeKind.FAILED, error_code="connection_error").is_retryable
