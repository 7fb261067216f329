"""What a provider batch may hold, and which requests belong together in one: pure rules.

The sharder (``providers/sharding.py``) writes the files; these are its decisions. A shard
stays under the smallest of the vendor's caps, filled to ``BYTE_HEADROOM`` of the byte cap
(headroom for the vendor's own accounting and, for Anthropic, the JSON envelope around the
lines). Requests that start with the same long system prompt go to the same bucket, so they
land in the same shard and the vendor's prompt cache can hit.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BYTE_HEADROOM = 0.9
"""Fill shards to this fraction of the vendor's byte cap."""
DEFAULT_MIN_PREFIX_CHARS = 256
"""A system prompt at least this long is worth keeping together for the prompt cache."""
PREFIX_SLOTS = 16
"""Buckets per model and endpoint for prompts with a long shared prefix (by a stable hash)."""
_SYSTEM_ROLES = ("system", "developer")


@dataclass(frozen=True, slots=True)
class ShardLimits:
    """The caps one provider batch must respect."""

    max_requests: int
    max_bytes: int
    max_embedding_inputs: int | None = None
    token_budgets: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ValueError(f"shard caps must be positive, got {self.max_requests} requests, {self.max_bytes} bytes")

    @classmethod
    def from_caps(cls, caps: Any) -> ShardLimits:
        """From a provider's ``BatchCaps`` (read by attribute, so core does not import adapters)."""
        return cls(
            max_requests=caps.max_requests,
            max_bytes=caps.max_bytes,
            max_embedding_inputs=caps.max_embedding_inputs,
            token_budgets=dict(caps.enqueued_token_budget or {}),
        )

    @property
    def byte_limit(self) -> int:
        return int(self.max_bytes * BYTE_HEADROOM)

    def token_limit(self, model: str) -> int | None:
        return self.token_budgets.get(model)


def shared_prefix(body: Mapping[str, Any], min_chars: int = DEFAULT_MIN_PREFIX_CHARS) -> str | None:
    """The long system prompt a request starts with, if any (what a prompt cache can reuse)."""
    # Called once per request on the hot path: plain dict/list checks, no ABC isinstance.
    system = body.get("system")  # Anthropic keeps it beside the messages
    if system is None:
        messages = body.get("messages")
        if not messages:
            return None
        first = messages[0]
        if type(first) is not dict or first.get("role") not in _SYSTEM_ROLES:
            return None
        system = first.get("content")
    if type(system) is list:  # typed parts: the text of the parts, in order
        system = "".join(p.get("text", "") for p in system if type(p) is dict)
    if type(system) is str and len(system) >= min_chars:
        return system
    return None


def prefix_slot(prefix: str) -> int:
    """The bucket of a shared prefix among ``PREFIX_SLOTS``, the same in every process."""
    # crc32, not hash(): the slot must not change between processes (PYTHONHASHSEED).
    return zlib.crc32(prefix.encode()) % PREFIX_SLOTS
