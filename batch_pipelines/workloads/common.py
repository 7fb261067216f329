"""What the four workloads share: input-size config and the chat-completion response shape."""

from __future__ import annotations

from typing import Any

import dagster as dg


class SyntheticInputConfig(dg.Config):
    """Size and seed of a synthetic input partition."""

    rows: int = 120
    seed: int = 7


def chat_text(response: dict[str, Any]) -> str:
    """The answer text of an OpenAI chat completion or an Anthropic message."""
    if "choices" in response:
        return response["choices"][0]["message"]["content"] or ""
    return "".join(block.get("text", "") for block in response.get("content", []) if block.get("type") == "text")
