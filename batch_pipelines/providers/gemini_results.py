"""Gemini answers parsed once, at the edge: usage, outcomes, and the OpenAI shape workloads read.

Usage comes from ``usageMetadata``: ``promptTokenCount`` already includes
``cachedContentTokenCount`` (as ``Usage.input_tokens`` includes cached tokens), tool-use prompt
tokens are input too, and ``thoughtsTokenCount`` is reported beside ``candidatesTokenCount``
but billed as output, so output is their sum and reasoning is the thoughts. A batch embedding
answer reports ``tokenCount`` instead.

Workloads written for OpenAI read ``choices[0].message.content`` or ``data[0].embedding``, so a
successful answer is handed on in that shape, with Gemini's own answer under ``gemini`` for
workloads that want the native fields.

A batch line's failure is a ``google.rpc.Status``; its ``code`` is a gRPC code (HTTP error
envelopes use HTTP codes instead), so the ``status`` name is read first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batch_pipelines.core.errors import MalformedResponseError
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.usage import ZERO_USAGE, Usage

MAX_REASON_CHARS = 500
# google.rpc.Code -> (name, the HTTP status Google maps it to).
GRPC_CODES: Mapping[int, tuple[str, int]] = {
    1: ("CANCELLED", 499),
    2: ("UNKNOWN", 500),
    3: ("INVALID_ARGUMENT", 400),
    4: ("DEADLINE_EXCEEDED", 504),
    5: ("NOT_FOUND", 404),
    6: ("ALREADY_EXISTS", 409),
    7: ("PERMISSION_DENIED", 403),
    8: ("RESOURCE_EXHAUSTED", 429),
    9: ("FAILED_PRECONDITION", 400),
    10: ("ABORTED", 409),
    11: ("OUT_OF_RANGE", 400),
    12: ("UNIMPLEMENTED", 501),
    13: ("INTERNAL", 500),
    14: ("UNAVAILABLE", 503),
    15: ("DATA_LOSS", 500),
    16: ("UNAUTHENTICATED", 401),
}
STATUS_HTTP: Mapping[str, int] = {name: http for name, http in GRPC_CODES.values()}
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
_UNFINISHED = {"CANCELLED": OutcomeKind.CANCELLED, "DEADLINE_EXCEEDED": OutcomeKind.EXPIRED}


def _count(value: Any, name: str) -> int:
    """A token count: proto3 JSON may write int32 as a number and int64 as a string."""
    if value is None:
        return 0
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedResponseError(f"usage field {name!r} is {value!r}, not a token count")
    return value


def gemini_usage(metadata: Any) -> Usage | None:
    """``usageMetadata`` as ``Usage``; None when the answer carries none."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise MalformedResponseError(f"'usageMetadata' is {type(metadata).__name__}, not an object")
    prompt = _count(metadata.get("promptTokenCount"), "promptTokenCount")
    tool_prompt = _count(metadata.get("toolUsePromptTokenCount"), "toolUsePromptTokenCount")
    cached = _count(metadata.get("cachedContentTokenCount"), "cachedContentTokenCount")
    thoughts = _count(metadata.get("thoughtsTokenCount"), "thoughtsTokenCount")
    candidates = _count(metadata.get("candidatesTokenCount"), "candidatesTokenCount")
    try:
        return Usage(prompt + tool_prompt, min(cached, prompt), 0, candidates + thoughts, thoughts)
    except ValueError as exc:
        raise MalformedResponseError(f"inconsistent usageMetadata: {exc}") from None


def response_text(response: Mapping[str, Any]) -> tuple[str, str]:
    """(text, OpenAI finish_reason) of the first candidate; thought parts are left out."""
    candidates = response.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        feedback = response.get("promptFeedback")
        blocked = feedback.get("blockReason") if isinstance(feedback, Mapping) else None
        return "", "content_filter" if blocked else "stop"
    first: Mapping[str, Any] = candidates[0] if isinstance(candidates[0], Mapping) else {}
    content = first.get("content")
    raw_parts = content.get("parts") if isinstance(content, Mapping) else None
    parts: list[Any] = raw_parts if isinstance(raw_parts, list) else []
    text = "".join(
        p["text"] for p in parts if isinstance(p, Mapping) and isinstance(p.get("text"), str) and not p.get("thought")
    )
    finish = first.get("finishReason")
    return text, _FINISH.get(finish, "content_filter") if finish else "stop"


def _openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def as_chat_completion(response: Mapping[str, Any], usage: Usage, model: str) -> dict[str, Any]:
    """A ``GenerateContentResponse`` in the chat-completion shape, the native answer under ``gemini``."""
    text, finish = response_text(response)
    return {
        "id": response.get("responseId"),
        "object": "chat.completion",
        "model": response.get("modelVersion") or model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": _openai_usage(usage),
        "gemini": dict(response),
    }


def as_embeddings(vectors: list[list[float]], usage: Usage, model: str, native: Any) -> dict[str, Any]:
    """Embeddings in the OpenAI list shape (the same vector column either way)."""
    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
        "gemini": native,
    }


def embedding_values(embedding: Any) -> list[float]:
    values = embedding.get("values") if isinstance(embedding, Mapping) else None
    if not isinstance(values, list):
        raise MalformedResponseError("an embedding answer has no 'values' list")
    return values


def status_of(error: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """(status name, HTTP status) of a ``google.rpc.Status`` or an HTTP error envelope's ``error``."""
    name = error.get("status") if isinstance(error.get("status"), str) else None
    code = error.get("code")
    if name is None and isinstance(code, int) and code in GRPC_CODES:
        name = GRPC_CODES[code][0]
    if name is not None and name in STATUS_HTTP:
        return name, STATUS_HTTP[name]
    return name, code if isinstance(code, int) and code >= 100 else None


def _reason(error: Mapping[str, Any], fallback: str) -> str:
    message = error.get("message")
    return (message if isinstance(message, str) and message else fallback)[:MAX_REASON_CHARS]


def error_outcome(custom_id: str, error: Mapping[str, Any], model: str | None) -> ItemOutcome:
    name, http = status_of(error)
    kind = _UNFINISHED.get(name or "", OutcomeKind.FAILED)
    return ItemOutcome(custom_id, kind, _reason(error, name or "error"), ZERO_USAGE, None, http, name, model)


def line_outcome(line: dict[str, Any], default_model: str | None) -> ItemOutcome | None:
    """One batch result line (``{"key", "response"}`` or ``{"key", "error"}``); None if unusable."""
    key = line.get("key")
    if not isinstance(key, str):
        metadata = line.get("metadata")  # inlined responses echo the request's metadata instead
        key = metadata.get("key") if isinstance(metadata, Mapping) else None
        if not isinstance(key, str):
            return None
    error = line.get("error")
    if isinstance(error, Mapping):
        return error_outcome(key, error, default_model)
    response = line.get("response")
    if not isinstance(response, Mapping):
        return None
    model = default_model or ""
    try:
        if "embedding" in response:
            usage = Usage(_count(response.get("tokenCount"), "tokenCount"))
            body = as_embeddings([embedding_values(response["embedding"])], usage, model, dict(response))
        else:
            usage = gemini_usage(response.get("usageMetadata")) or ZERO_USAGE
            body = as_chat_completion(response, usage, model)
    except MalformedResponseError:
        return None
    return ItemOutcome(key, OutcomeKind.SUCCEEDED, None, usage, body, 200, None, default_model)
