"""The sync lane for Gemini's native API: ``generateContent``, ``embedContent``, ``batchEmbedContents``.

The same rate limiter and retry policy as every other protocol (the shared ``SyncLane``); what
differs is where a request goes (the model is in the path) and its body, translated from the
OpenAI shape by ``gemini_translate``, and the answer, handed on in the OpenAI shape with
Gemini's own under ``gemini`` (``gemini_results``).

Embeddings: one input goes to ``embedContent``, several to ``batchEmbedContents``. When an
embeddings answer reports no token count, the input is counted with our offline tokenizer and
the outcome says so in its reason: the cost is then an estimate, never a silent zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx
import orjson

from batch_pipelines.core.errors import InvalidInputError, MalformedResponseError
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.core.tokens import count_chat_prompt, count_embedding_input
from batch_pipelines.core.usage import ZERO_USAGE, Usage
from batch_pipelines.providers.gemini_batch import google_error
from batch_pipelines.providers.gemini_results import (
    as_chat_completion,
    as_embeddings,
    embedding_values,
    gemini_usage,
)
from batch_pipelines.providers.gemini_translate import (
    embed_content_request,
    embedding_texts,
    generate_content_request,
    is_native,
    model_path,
)
from batch_pipelines.providers.sync_lane import SyncLane

ESTIMATED_USAGE = "usage estimated with the offline tokenizer: the answer reported no token count"


class GeminiSyncLane(SyncLane):
    """``POST {base_url}/v1beta/models/{model}:generateContent`` (and the embedding methods)."""

    protocol = "gemini"
    endpoints = frozenset({Endpoint.CHAT, Endpoint.EMBEDDINGS})

    def _prepare(self, request: LLMRequest) -> tuple[str, bytes]:
        """The method's path and the translated body, checked and serialised once."""
        if request.endpoint not in self.endpoints:
            raise InvalidInputError(
                f"request {request.custom_id!r}: provider {self.config.name!r} (gemini protocol) cannot serve "
                f"{request.endpoint.value}; it serves /v1/chat/completions and /v1/embeddings",
                custom_id=request.custom_id,
            )
        body = request.body
        if not isinstance(body, Mapping):
            raise InvalidInputError(f"request {request.custom_id!r}: body must be a JSON object")
        if body.get("stream"):
            raise InvalidInputError(f"request {request.custom_id!r}: streaming is not supported on the sync lane")
        if request.endpoint is Endpoint.CHAT:
            path, payload = (
                model_path(request.model, "generateContent"),
                generate_content_request(body, request.custom_id),
            )
        elif is_native(Endpoint.EMBEDDINGS, body):
            path, payload = model_path(request.model, "embedContent"), {k: v for k, v in body.items() if k != "model"}
        else:
            texts = embedding_texts(body, request.custom_id)
            requests = [embed_content_request(body, request.model, request.custom_id, t) for t in texts]
            if len(requests) == 1:
                del requests[0]["model"]
                path, payload = model_path(request.model, "embedContent"), requests[0]
            else:
                path, payload = model_path(request.model, "batchEmbedContents"), {"requests": requests}
        try:
            return path, orjson.dumps(payload)
        except TypeError as exc:
            raise InvalidInputError(f"request {request.custom_id!r}: body is not JSON-serialisable ({exc})") from None

    def parse_usage(self, endpoint: Endpoint, body: Mapping[str, Any]) -> Usage | None:
        return gemini_usage(body.get("usageMetadata"))

    def estimate_tokens(self, request: LLMRequest) -> int:
        body = request.body
        if request.endpoint is Endpoint.EMBEDDINGS:
            return count_embedding_input(dict(body))
        max_out = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        return count_chat_prompt(dict(body)) + (max_out if isinstance(max_out, int) else 0)

    def _outcome(self, request: LLMRequest, response: httpx.Response) -> ItemOutcome:
        outcome = super()._outcome(request, response)
        if outcome.kind is not OutcomeKind.SUCCEEDED:
            if response.status_code >= 400:
                message, status = google_error(response)
                outcome = replace(outcome, reason=message, error_code=status or outcome.error_code)
            return outcome
        native = outcome.response
        model = request.model
        try:
            if request.endpoint is Endpoint.CHAT:
                return replace(outcome, response=as_chat_completion(native, outcome.usage, model), model=model)
            vectors = [embedding_values(e) for e in native.get("embeddings", [native.get("embedding")])]
        except MalformedResponseError as exc:
            return replace(
                outcome,
                kind=OutcomeKind.FAILED,
                reason=f"malformed response from {self.config.name}: {exc}",
                error_code="malformed_response",
                response=None,
            )
        usage, reason = outcome.usage, None
        if outcome.usage == ZERO_USAGE and native.get("usageMetadata") is None:
            usage, reason = Usage(count_embedding_input(dict(request.body))), ESTIMATED_USAGE
        return replace(
            outcome, usage=usage, reason=reason, response=as_embeddings(vectors, usage, model, native), model=model
        )
