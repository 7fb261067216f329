"""The sync lane for the OpenAI wire protocol (OpenAI, Gemini's compatible surface, vLLM, aggregators).

``openai_usage`` is the one reader of an OpenAI usage object; the batch lane reads result
lines with it too, so sync and batch outcomes are priced from the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batch_pipelines.core.errors import MalformedResponseError
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.core.tokens import count_chat_prompt, count_embedding_input
from batch_pipelines.core.usage import Usage
from batch_pipelines.providers.sync_lane import SyncLane, build_usage, int_field, mapping_field


def openai_usage(body: Mapping[str, Any]) -> Usage | None:
    """Usage of a chat, embeddings or responses body; None when the body carries none.

    Chat/embeddings: ``prompt_tokens`` (cached ones included, as in ``Usage``),
    ``completion_tokens``, ``prompt_tokens_details.cached_tokens``,
    ``completion_tokens_details.reasoning_tokens``. Responses API: ``input_tokens``,
    ``output_tokens`` and their ``*_details``.
    """
    usage = body.get("usage")
    if usage is None:
        return None
    if not isinstance(usage, Mapping):
        raise MalformedResponseError(f"'usage' is {type(usage).__name__}, not an object")
    if "prompt_tokens" in usage:
        input_details = mapping_field(usage, "prompt_tokens_details")
        output_details = mapping_field(usage, "completion_tokens_details")
        input_tokens = int_field(usage, "prompt_tokens")
        output_tokens = int_field(usage, "completion_tokens")
    else:
        input_details = mapping_field(usage, "input_tokens_details")
        output_details = mapping_field(usage, "output_tokens_details")
        input_tokens = int_field(usage, "input_tokens")
        output_tokens = int_field(usage, "output_tokens")
    return build_usage(
        input_tokens=input_tokens,
        cached_input_tokens=int_field(input_details, "cached_tokens"),
        output_tokens=output_tokens,
        reasoning_tokens=int_field(output_details, "reasoning_tokens"),
    )


class OpenAISyncLane(SyncLane):
    """``POST {base_url}/chat/completions`` and ``/embeddings``."""

    protocol = "openai"
    endpoints = frozenset({Endpoint.CHAT, Endpoint.EMBEDDINGS})

    def parse_usage(self, endpoint: Endpoint, body: Mapping[str, Any]) -> Usage | None:
        return openai_usage(body)

    def estimate_tokens(self, request: LLMRequest) -> int:
        # OpenAI charges a request's max output against the tokens-per-minute budget up front.
        if request.endpoint is Endpoint.EMBEDDINGS:
            return count_embedding_input(request.body)
        body = request.body
        max_out = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        return count_chat_prompt(body) + (max_out if isinstance(max_out, int) else 0)
