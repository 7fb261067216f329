"""Gemini's native shapes for the emulator: requests in, responses, usage and errors out.

The emulator answers a ``GenerateContentRequest`` with the same deterministic models as the
other surfaces: the request is read into the chat shape the ``Responder`` knows (system
instruction first, ``model`` turns as assistant turns, ``generationConfig`` limits and JSON
schema), and the answer is written back as a ``GenerateContentResponse`` with
``usageMetadata``. Field names are read in camelCase or snake_case (proto3 JSON parsers accept
both, and Google's own curl examples and SDK send some snake_case); they are written in
camelCase, with int64 counts as JSON numbers where the API documents int32 (token counts) and
as strings where it documents int64 (``tokenCount``, batch stats, ``sizeBytes``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response

from batch_pipelines.emulator import accounting
from batch_pipelines.emulator.catalogue import native_dimensions
from batch_pipelines.emulator.embeddings import embed
from batch_pipelines.emulator.errors import ApiError
from batch_pipelines.emulator.profile import Profile
from batch_pipelines.emulator.responses import Responder, UsageTotals

API_VERSION = "v1beta"
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT",
    416: "OUT_OF_RANGE",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}
THOUGHT_TOKENS = 24
"""Thoughts a request that sets a thinking budget reports (at most its budget)."""


def field(obj: dict[str, Any], camel: str, default: Any = None) -> Any:
    """``obj[camel]``, or its snake_case spelling (proto3 JSON accepts either)."""
    if camel in obj:
        return obj[camel]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return obj.get(snake, default)


def timestamp(seconds: float | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``, as Google's APIs write ``google.protobuf.Timestamp``."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def status_object(status: int, message: str) -> dict[str, Any]:
    """A ``google.rpc.Status``: what a failed batch line or inlined response carries."""
    return {"code": status, "message": message, "status": GOOGLE_STATUS.get(status, "UNKNOWN")}


def error_response(error: ApiError) -> Response:
    """Google's HTTP error envelope: ``{"error": {"code", "message", "status", "details"}}``."""
    body: dict[str, Any] = {"error": status_object(error.status, error.message)}
    retry_after = error.headers.get("retry-after")
    if error.status == 429 and retry_after:
        # Google says how long to wait in a RetryInfo detail, not only in a header.
        body["error"]["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"}
        ]
    return Response(orjson.dumps(body), status_code=error.status, media_type="application/json", headers=error.headers)


def model_id(resource: str) -> str:
    """``models/gemini-3-flash`` or ``gemini-3-flash`` -> ``gemini-3-flash``."""
    return resource.removeprefix("models/")


def _parts_text(content: Any, where: str) -> str:
    if not isinstance(content, dict):
        raise ApiError(400, f"Invalid value at '{where}': a Content object with 'parts' is required.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise ApiError(400, f"* {where}.parts: contents.parts must not be empty.")
    texts = []
    for index, part in enumerate(parts):
        if not isinstance(part, dict):
            raise ApiError(400, f"Invalid value at '{where}.parts[{index}]': a Part object is required.")
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
        elif not any(k in part for k in ("inlineData", "inline_data", "fileData", "file_data")):
            raise ApiError(400, f"* {where}.parts[{index}]: a part needs text, inlineData or fileData.")
    return "".join(texts)


def chat_body(model: str, request: Any) -> dict[str, Any]:
    """A ``GenerateContentRequest`` as the chat body the deterministic models answer."""
    if not isinstance(request, dict):
        raise ApiError(400, "Invalid JSON payload: the request must be a GenerateContentRequest object.")
    contents = request.get("contents")
    if not isinstance(contents, list) or not contents:
        raise ApiError(400, "* GenerateContentRequest.contents: contents is not specified")
    messages: list[dict[str, Any]] = []
    system = field(request, "systemInstruction")
    if system is not None:
        messages.append({"role": "system", "content": _parts_text(system, "system_instruction")})
    for index, content in enumerate(contents):
        role = content.get("role", "user") if isinstance(content, dict) else None
        if role not in ("user", "model"):
            raise ApiError(400, f"* GenerateContentRequest.contents[{index}].role: must be 'user' or 'model'.")
        text = _parts_text(content, f"contents[{index}]")
        messages.append({"role": "assistant" if role == "model" else "user", "content": text})
    body: dict[str, Any] = {"model": model, "messages": messages}
    config = field(request, "generationConfig") or {}
    if not isinstance(config, dict):
        raise ApiError(400, "Invalid value at 'generation_config': a GenerationConfig object is required.")
    limit = field(config, "maxOutputTokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ApiError(400, f"* GenerateContentRequest.generation_config.max_output_tokens: {limit!r} is invalid.")
        body["max_completion_tokens"] = limit
    candidates = field(config, "candidateCount")
    if candidates is not None and candidates != 1:
        raise ApiError(400, "* GenerateContentRequest.generation_config.candidate_count: only 1 is supported here.")
    json_schema = field(config, "responseJsonSchema")
    openapi_schema = field(config, "responseSchema")
    if json_schema is not None and openapi_schema is not None:
        raise ApiError(400, "responseSchema and responseJsonSchema cannot both be set.")
    schema = json_schema if json_schema is not None else openapi_schema
    if field(config, "responseMimeType") == "application/json":
        if isinstance(schema, dict):
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "r", "schema": _lower(schema)}}
        else:
            body["response_format"] = {"type": "json_object"}
    elif schema is not None:
        raise ApiError(400, "A response schema needs responseMimeType 'application/json'.")
    return body


def _lower(schema: Any) -> Any:
    """``responseSchema`` (OpenAPI subset) spells types in capitals: ``OBJECT``, ``STRING``."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_lower(v) for v in schema]
    return schema


def usage_metadata(usage: UsageTotals) -> dict[str, Any]:
    """``usageMetadata``: prompt counts include cached content, thoughts are outside candidates."""
    out: dict[str, Any] = {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens - usage.reasoning_tokens,
        "totalTokenCount": usage.input_tokens + usage.output_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.input_tokens}],
    }
    if usage.cached_tokens:
        out["cachedContentTokenCount"] = usage.cached_tokens
        out["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": usage.cached_tokens}]
    if usage.reasoning_tokens:
        out["thoughtsTokenCount"] = usage.reasoning_tokens
    return out


def generate_content_response(chat: dict[str, Any], usage: UsageTotals, response_id: str) -> dict[str, Any]:
    """A chat completion from the ``Responder`` as a ``GenerateContentResponse``."""
    choice = chat["choices"][0]
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": choice["message"]["content"]}]},
                "finishReason": _FINISH.get(choice["finish_reason"], "OTHER"),
                "index": 0,
            }
        ],
        "usageMetadata": usage_metadata(usage),
        "modelVersion": chat["model"],
        "responseId": response_id,
    }


def thinking_budget(request: dict[str, Any]) -> int:
    """The request's ``thinkingConfig.thinkingBudget`` (0 when thinking is not asked for)."""
    config = field(request, "generationConfig") or {}
    thinking = field(config, "thinkingConfig") if isinstance(config, dict) else None
    budget = field(thinking, "thinkingBudget") if isinstance(thinking, dict) else None
    return budget if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0 else 0


def embed_text(request: Any, where: str) -> tuple[str, int | None]:
    """The text of an ``EmbedContentRequest`` and its ``outputDimensionality``."""
    if not isinstance(request, dict):
        raise ApiError(400, f"Invalid value at '{where}': an EmbedContentRequest object is required.")
    text = _parts_text(request.get("content"), f"{where}.content")
    dimensions = field(request, "outputDimensionality")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise ApiError(400, f"* {where}.output_dimensionality: {dimensions!r} is not a positive integer.")
    return text, dimensions


def answer_generate(
    responder: Responder, model: str, request: Any, *, profile: Profile, key: str, response_id: str
) -> tuple[dict[str, Any], UsageTotals]:
    """The ``GenerateContentResponse`` for one request, and its usage."""
    body = chat_body(model, request)
    chat, usage = responder.chat_completion(body, profile=profile, key=key, completion_id=response_id, created=0)
    budget = thinking_budget(request)
    if budget:
        # Thinking models bill their thoughts as output, reported apart from the candidates.
        thoughts = min(budget, THOUGHT_TOKENS)
        usage = UsageTotals(usage.input_tokens, usage.cached_tokens, usage.output_tokens + thoughts, thoughts)
    return generate_content_response(chat, usage, response_id), usage


def answer_embed(model: str, request: Any, where: str) -> tuple[list[float], int]:
    """The embedding values of one ``EmbedContentRequest`` and its prompt tokens."""
    text, dimensions = embed_text(request, where)
    native = native_dimensions(model)
    if dimensions is not None and dimensions > native:
        raise ApiError(400, f"* {where}.output_dimensionality: {model} supports at most {native}.")
    return embed(text, dimensions or native), accounting.count_text(text)
