"""A call made at the call site: the vendor's own request body, checked before it is accepted.

The router takes the bodies the vendors' sync endpoints take (OpenAI chat completions and
embeddings, Anthropic messages). What a vendor would refuse outright is refused here, with a
message naming the problem, before the call is written anywhere or costs anything. The checks
follow the vendors' API references: chat needs a non-empty ``messages`` list, embeddings an
``input``, Anthropic messages a ``messages`` list and an integer ``max_tokens``; streaming
cannot be deferred.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.core.requests import Endpoint

MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class CallRequest:
    """A checked call: its model, the endpoint it targets, and the body without the model."""

    model: str
    endpoint: Endpoint
    body: dict[str, Any]


def parse_call_request(body: Any, endpoint: Endpoint | str | None = None, *, protocol: str = "openai") -> CallRequest:
    """Check ``body`` for ``endpoint`` and split off its model.

    Without an endpoint: embeddings when the body has an ``input`` and no ``messages``, else the
    chat endpoint of the provider's wire ``protocol`` (Anthropic messages, or OpenAI chat).
    """
    if not isinstance(body, Mapping):
        raise InvalidInputError(f"a request body must be a JSON object, not {type(body).__name__}")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidInputError("the request names no model: set 'model' to a model name")
    target = _endpoint(endpoint, body, protocol)
    if body.get("stream"):
        raise InvalidInputError("'stream': true cannot be routed: streamed answers have no batch equivalent")
    if target is Endpoint.EMBEDDINGS:
        value = body.get("input")
        if value is None or value == "" or value == []:
            raise InvalidInputError("an embeddings request needs a non-empty 'input'")
    else:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidInputError(f"a {target.value} request needs a non-empty 'messages' list")
        for index, message in enumerate(messages):
            if not isinstance(message, Mapping) or "role" not in message:
                raise InvalidInputError(f"messages[{index}] must be an object with a 'role'")
    if target is Endpoint.MESSAGES:
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise InvalidInputError("an Anthropic messages request needs 'max_tokens', a positive integer")
    return CallRequest(model=model, endpoint=target, body={k: v for k, v in body.items() if k != "model"})


def _endpoint(endpoint: Endpoint | str | None, body: Mapping[str, Any], protocol: str) -> Endpoint:
    if endpoint is None:
        if "input" in body and "messages" not in body:
            return Endpoint.EMBEDDINGS
        return Endpoint.MESSAGES if protocol == "anthropic" else Endpoint.CHAT
    try:
        return Endpoint(endpoint)
    except ValueError:
        known = ", ".join(e.value for e in Endpoint)
        raise InvalidInputError(f"endpoint {endpoint!r} is not one the router serves ({known})") from None


def resolve_deadline(deadline: datetime | timedelta | None, now: datetime) -> datetime | None:
    """A deadline as an aware datetime: given as one, or as a timedelta from ``now``."""
    if deadline is None:
        return None
    if isinstance(deadline, timedelta):
        return now + deadline
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None:
            raise InvalidInputError(
                f"deadline {deadline.isoformat()} has no timezone; give an aware datetime or a timedelta"
            )
        return deadline
    raise InvalidInputError(f"deadline must be a datetime or a timedelta, not {type(deadline).__name__}")


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidInputError(
            f"an idempotency key must be a non-empty string of at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        )
    return key
