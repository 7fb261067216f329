"""The sync lane for Anthropic's Messages API.

``anthropic_usage`` folds cache reads and writes into ``input_tokens`` (Anthropic reports them
beside it) so ``Usage.input_tokens`` is the whole prompt, as for every other vendor; the batch
lane reads result messages with it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batch_pipelines.core.errors import MalformedResponseError
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.core.tokens import count_chat_prompt
from batch_pipelines.core.usage import Usage
from batch_pipelines.providers.sync_lane import SyncLane, build_usage, int_field


def anthropic_usage(message: Mapping[str, Any]) -> Usage | None:
    """Usage of a Messages response; None when it carries none."""
    usage = message.get("usage")
    if usage is None:
        return None
    if not isinstance(usage, Mapping):
        raise MalformedResponseError(f"'usage' is {type(usage).__name__}, not an object")
    cache_read = int_field(usage, "cache_read_input_tokens")
    cache_write = int_field(usage, "cache_creation_input_tokens")
    return build_usage(
        input_tokens=int_field(usage, "input_tokens") + cache_read + cache_write,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=int_field(usage, "output_tokens"),
    )


class AnthropicSyncLane(SyncLane):
    """``POST {base_url}/v1/messages``."""

    protocol = "anthropic"
    endpoints = frozenset({Endpoint.MESSAGES})

    def parse_usage(self, endpoint: Endpoint, body: Mapping[str, Any]) -> Usage | None:
        return anthropic_usage(body)

    def estimate_tokens(self, request: LLMRequest) -> int:
        max_out = request.body.get("max_tokens") or 0
        return count_chat_prompt(request.body) + (max_out if isinstance(max_out, int) else 0)
