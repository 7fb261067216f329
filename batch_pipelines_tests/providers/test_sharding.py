"""Sharding: caps, one model and endpoint per shard, prefix grouping, determinism."""

from __future__ import annotations

import orjson
import pytest

from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.core.shard_rules import ShardLimits
from batch_pipelines.core.tokens import count_chat_prompt
from batch_pipelines.providers.sharding import encode_line, shard_requests, split_shard

SYSTEM_A = "You label support tickets. " * 12  # ~300 characters: a shared prefix worth caching
SYSTEM_B = "You summarise legal contracts. " * 10


def chat(i: int, model: str = "gpt-5.4-mini", system: str | None = None, text: str | None = None) -> LLMRequest:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text or f"ticket number {i}"})
    return LLMRequest(f"r-{i}", Endpoint.CHAT, model, {"messages": messages})


def embed(i: int, inputs: int) -> LLMRequest:
    return LLMRequest(
        f"e-{i}", Endpoint.EMBEDDINGS, "text-embedding-3-small", {"input": [f"chunk {i}.{k}" for k in range(inputs)]}
    )


def lines(shard) -> list[dict]:
    return [orjson.loads(line) for line in shard.path.read_bytes().splitlines()]


def test_request_cap_splits_into_full_shards_then_the_remainder(tmp_path):
    """25 requests under a cap of 10 make shards of 10, 10 and 5, every request once, in order."""
    shards = shard_requests((chat(i) for i in range(25)), ShardLimits(max_requests=10, max_bytes=10**9), tmp_path)
    assert [s.request_count for s in shards] == [10, 10, 5]
    ids = [cid for s in shards for cid in s.custom_ids()]
    assert ids == [f"r-{i}" for i in range(25)]
    assert all(s.byte_size == s.path.stat().st_size for s in shards)


def test_byte_cap_fills_to_ninety_percent(tmp_path):
    """No shard exceeds 90% of the byte cap, and the cap is what split the shards."""
    limits = ShardLimits(max_requests=10_000, max_bytes=2_000)
    shards = shard_requests((chat(i) for i in range(60)), limits, tmp_path)
    assert len(shards) > 1
    assert all(s.byte_size <= 1_800 for s in shards)
    assert sum(s.request_count for s in shards) == 60


def test_embedding_input_cap_counts_inputs_not_requests(tmp_path):
    """Requests carrying 4 inputs each under a 10-input cap go two to a shard."""
    limits = ShardLimits(max_requests=100, max_bytes=10**9, max_embedding_inputs=10)
    shards = shard_requests((embed(i, 4) for i in range(5)), limits, tmp_path)
    assert [s.embedding_inputs for s in shards] == [8, 8, 4]


def test_enqueued_token_budget_bounds_each_shard(tmp_path):
    """With a token budget for the model, shards hold at most that many (exactly counted) prompt tokens."""
    requests = [chat(i, text="word " * 40) for i in range(20)]
    per_request = count_chat_prompt(requests[0].body)
    limits = ShardLimits(max_requests=100, max_bytes=10**9, token_budgets={"gpt-5.4-mini": per_request * 6 + 1})
    shards = shard_requests(iter(requests), limits, tmp_path)
    assert [s.request_count for s in shards] == [6, 6, 6, 2]
    assert all(s.estimated_tokens <= per_request * 6 + 1 for s in shards)


def test_one_model_and_one_endpoint_per_shard(tmp_path):
    """Mixed models and endpoints never share a shard."""
    requests = [chat(i, model="gpt-5.4" if i % 2 else "gpt-5.4-mini") for i in range(10)] + [
        embed(i, 1) for i in range(3)
    ]
    shards = shard_requests(iter(requests), ShardLimits(max_requests=100, max_bytes=10**9), tmp_path)
    assert sorted((s.model, s.endpoint, s.request_count) for s in shards) == [
        ("gpt-5.4", Endpoint.CHAT, 5),
        ("gpt-5.4-mini", Endpoint.CHAT, 5),
        ("text-embedding-3-small", Endpoint.EMBEDDINGS, 3),
    ]
    for shard in shards:
        assert {line.get("body", {}).get("model") for line in lines(shard)} == {shard.model}


def test_requests_sharing_a_long_system_prompt_land_in_the_same_shard(tmp_path):
    """Interleaved requests of two system prompts come out grouped: each prompt's requests in one shard, in input
    order."""
    requests = [chat(i, system=SYSTEM_A if i % 2 else SYSTEM_B) for i in range(40)]
    shards = shard_requests(iter(requests), ShardLimits(max_requests=20, max_bytes=10**9), tmp_path)
    assert len(shards) == 2
    by_prompt = {}
    for shard in shards:
        systems = {line["body"]["messages"][0]["content"] for line in lines(shard)}
        assert len(systems) == 1
        by_prompt[systems.pop()] = shard.custom_ids()
    assert by_prompt[SYSTEM_A] == [f"r-{i}" for i in range(1, 40, 2)]
    assert by_prompt[SYSTEM_B] == [f"r-{i}" for i in range(0, 40, 2)]


def test_small_prefix_groups_are_packed_together(tmp_path):
    """Groups smaller than a shard share shards instead of making one small batch each."""
    requests = [chat(i, system=SYSTEM_A if i < 3 else SYSTEM_B if i < 6 else None) for i in range(9)]
    shards = shard_requests(iter(requests), ShardLimits(max_requests=100, max_bytes=10**9), tmp_path)
    assert len(shards) == 1 and shards[0].request_count == 9


def test_same_input_gives_the_same_shards_and_fingerprints(tmp_path):
    """Sharding is deterministic: a retry in a new run finds the same fingerprints; a changed prompt changes one."""
    make = lambda: (chat(i, system=SYSTEM_A if i % 3 else None) for i in range(50))  # noqa: E731
    limits = ShardLimits(max_requests=16, max_bytes=10**9)
    first = shard_requests(make(), limits, tmp_path / "a")
    second = shard_requests(make(), limits, tmp_path / "b")
    assert [s.fingerprint for s in first] == [s.fingerprint for s in second]
    changed = list(make())
    changed[1] = chat(1, system=SYSTEM_A, text="a different question")
    third = shard_requests(iter(changed), limits, tmp_path / "c")
    assert sum(a.fingerprint != c.fingerprint for a, c in zip(first, third)) == 1


def test_lines_are_the_protocols_batch_input(tmp_path):
    """OpenAI lines carry method, url and body with the model; Anthropic lines carry params."""
    request = chat(7)
    assert orjson.loads(encode_line(request)) == {
        "custom_id": "r-7",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {**request.body, "model": "gpt-5.4-mini"},
    }
    message = LLMRequest(
        "m-1",
        Endpoint.MESSAGES,
        "claude-sonnet-4.6",
        {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )
    [shard] = shard_requests([message], ShardLimits(max_requests=10, max_bytes=10**6), tmp_path, protocol="anthropic")
    assert lines(shard) == [{"custom_id": "m-1", "params": {**message.body, "model": "claude-sonnet-4.6"}}]


@pytest.mark.parametrize(
    "requests, limits, protocol, match",
    [
        ([chat(1, text="x" * 5000)], ShardLimits(max_requests=10, max_bytes=4000), "openai", "byte cap"),
        (
            [embed(1, 5)],
            ShardLimits(max_requests=10, max_bytes=10**6, max_embedding_inputs=3),
            "openai",
            "embedding-input cap",
        ),
        ([chat(1), chat(1)], ShardLimits(max_requests=10, max_bytes=10**6), "openai", "appears twice"),
        ([chat(1)], ShardLimits(max_requests=10, max_bytes=10**6), "anthropic", "does not serve"),
    ],
)
def test_requests_that_fit_no_batch_are_refused_clearly(tmp_path, requests, limits, protocol, match):
    """An oversize request, a repeated id or a wrong endpoint is an InvalidInputError naming it."""
    with pytest.raises(InvalidInputError, match=match):
        shard_requests(iter(requests), limits, tmp_path, protocol=protocol)
    assert not list(tmp_path.glob("shard-*")) and not (tmp_path / "spill").exists()


def test_split_shard_keeps_order_and_gives_new_fingerprints(tmp_path):
    """Halves of a shard hold its lines in order and each has its own fingerprint."""
    [shard] = shard_requests((chat(i) for i in range(7)), ShardLimits(max_requests=10, max_bytes=10**6), tmp_path)
    halves = split_shard(shard, 2)
    assert [h.request_count for h in halves] == [4, 3]
    assert [cid for h in halves for cid in h.custom_ids()] == shard.custom_ids()
    assert len({h.fingerprint for h in halves} | {shard.fingerprint}) == 3


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_body_that_is_not_valid_json_is_an_invalid_input_error_naming_the_request(tmp_path, protocol):
    """A lone surrogate in a body (sent outside the Dagster layer) is InvalidInputError naming its custom_id."""
    endpoint = Endpoint.MESSAGES if protocol == "anthropic" else Endpoint.CHAT
    requests = [
        LLMRequest(r.custom_id, endpoint, r.model, r.body) for r in (chat(0), chat(1, text="broken \ud800"), chat(2))
    ]
    with pytest.raises(InvalidInputError, match="request 'r-1' cannot be sent"):
        shard_requests(requests, ShardLimits(max_requests=10, max_bytes=10**6), tmp_path, protocol=protocol)
    with pytest.raises(InvalidInputError, match="'r-1'"):
        encode_line(requests[1], protocol)
