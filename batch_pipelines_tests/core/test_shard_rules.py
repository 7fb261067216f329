"""Shard rules: the caps a batch respects and which requests share a bucket. Pure, table-driven."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from batch_pipelines.core.shard_rules import PREFIX_SLOTS, ShardLimits, prefix_slot, shared_prefix

LONG = "You are a careful support-ticket classifier. " * 10  # 450 characters


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": [{"role": "system", "content": LONG}, {"role": "user", "content": "hi"}]}, LONG),
        ({"messages": [{"role": "developer", "content": LONG}]}, LONG),
        ({"system": LONG, "messages": [{"role": "user", "content": "hi"}]}, LONG),  # Anthropic
        ({"system": [{"type": "text", "text": LONG[:200]}, {"type": "text", "text": LONG[200:]}]}, LONG),
        ({"messages": [{"role": "system", "content": "short"}]}, None),
        ({"messages": [{"role": "user", "content": LONG}]}, None),
        ({"messages": []}, None),
        ({"input": "embed me"}, None),
    ],
)
def test_shared_prefix_is_a_long_leading_system_prompt(body, expected):
    """Only a system (or developer) prompt of at least the minimum length, in either protocol's place, is shared."""
    assert shared_prefix(body) == expected


def test_prefix_slot_is_stable_and_in_range():
    """A prefix always maps to the same slot (crc32, not the salted hash()), within PREFIX_SLOTS."""
    assert prefix_slot(LONG) == prefix_slot(str(LONG))
    assert prefix_slot(LONG) == 6  # crc32 of these bytes mod 16: the same in every process and release
    assert all(0 <= prefix_slot(f"prompt {i}") < PREFIX_SLOTS for i in range(200))


def test_limits_from_a_providers_caps_and_byte_headroom():
    """Limits read a provider's caps by attribute and fill shards to 90% of the byte cap."""
    caps = SimpleNamespace(
        max_requests=50_000, max_bytes=200_000_000, max_embedding_inputs=None, enqueued_token_budget={"m": 10}
    )
    limits = ShardLimits.from_caps(caps)
    assert limits.byte_limit == 180_000_000
    assert limits.token_limit("m") == 10 and limits.token_limit("other") is None


@pytest.mark.parametrize(("requests", "max_bytes"), [(0, 10), (10, 0)])
def test_limits_refuse_caps_that_hold_nothing(requests, max_bytes):
    """A cap of zero requests or zero bytes is a clear error, not an endless loop of empty shards."""
    with pytest.raises(ValueError, match="must be positive"):
        ShardLimits(max_requests=requests, max_bytes=max_bytes)
