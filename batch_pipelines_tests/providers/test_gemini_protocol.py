"""Gemini's native protocol: request translation, usage and pricing, the registry, both lanes over the emulator."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import orjson
import pytest

from batch_pipelines.core.errors import InvalidInputError, QueueFullError
from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.core.shard_rules import ShardLimits
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.core.usage import Usage
from batch_pipelines.providers.client import build_client
from batch_pipelines.providers.config import GEMINI_NATIVE_BASE_URL, ProviderConfig, ProviderRegistry
from batch_pipelines.providers.gemini_results import gemini_usage, line_outcome
from batch_pipelines.providers.gemini_translate import batch_line_request, generate_content_request
from batch_pipelines.providers.retry import NO_WAIT
from batch_pipelines.providers.sharding import shard_requests

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Labels: a, b"}]},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ],
    "max_completion_tokens": 50,
    "temperature": 0.2,
    "top_p": 0.9,
    "stop": "END",
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
}


def test_openai_chat_body_becomes_a_generate_content_request():
    """System and developer turns go to systemInstruction, assistant turns become model turns, limits and the
    JSON schema go to generationConfig."""
    assert generate_content_request(CHAT, "c1") == {
        "contents": [
            {"role": "user", "parts": [{"text": "first"}]},
            {"role": "model", "parts": [{"text": "ok"}]},
            {"role": "user", "parts": [{"text": "second"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Labels: a, b"}]},
        "generationConfig": {
            "maxOutputTokens": 50,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object"},
        },
    }


def test_native_bodies_pass_through_and_untranslatable_fields_are_refused():
    """A body with contents is sent as written (minus model); tools, images and multi-input batch embeddings are
    refused naming the problem."""
    native = {"model": "gemini-3-flash", "contents": [{"parts": [{"text": "hi"}]}], "safetySettings": []}
    assert generate_content_request(native, "n1") == {"contents": [{"parts": [{"text": "hi"}]}], "safetySettings": []}
    with pytest.raises(InvalidInputError, match="tools cannot be translated"):
        generate_content_request({**CHAT, "tools": []}, "t1")
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    with pytest.raises(InvalidInputError, match="'image_url' part"):
        generate_content_request(image, "i1")
    with pytest.raises(InvalidInputError, match="one input per request; this one has 2"):
        batch_line_request(Endpoint.EMBEDDINGS, {"input": ["a", "b"]}, "gemini-embedding-001", "e1")
    with pytest.raises(InvalidInputError, match="encoding_format 'base64'"):
        batch_line_request(
            Endpoint.EMBEDDINGS, {"input": "a", "encoding_format": "base64"}, "gemini-embedding-001", "e3"
        )
    assert batch_line_request(Endpoint.EMBEDDINGS, {"input": "a", "dimensions": 8}, "gemini-embedding-001", "e2") == {
        "content": {"parts": [{"text": "a"}]},
        "outputDimensionality": 8,
    }


def test_usage_metadata_with_cache_thoughts_and_tools_is_priced_exactly():
    """promptTokenCount includes cached tokens; thoughts are billed as output; the price book prices it to the digit."""
    usage = gemini_usage(
        {
            "promptTokenCount": 1000,
            "cachedContentTokenCount": 600,
            "toolUsePromptTokenCount": 50,
            "candidatesTokenCount": 100,
            "thoughtsTokenCount": 300,
            "totalTokenCount": 1450,
        }
    )
    assert usage == Usage(1050, 600, 0, 400, 300)
    cost = PriceBook.default().cost("gemini-3.1-pro", usage, Lane.BATCH)
    # batch: 450 uncached x $1.00 + 600 cached x $0.10 + 400 output x $6.00, per million tokens
    assert cost.cost_usd == Decimal("0.00291")
    assert cost.sync_equivalent_usd == Decimal("0.00582")


def test_result_lines_become_outcomes():
    """A response line succeeds in the chat shape (native answer kept), a status line fails with its HTTP status,
    an unfinished line is cancelled or expired, an embedding line carries its vector and tokenCount."""
    ok = line_outcome(
        {
            "key": "a",
            "response": {
                "candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "MAX_TOKENS"}],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1},
            },
        },
        "gemini-3-flash",
    )
    assert ok.kind is OutcomeKind.SUCCEEDED and ok.usage == Usage(3, 0, 0, 1, 0)
    assert ok.response["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "hi"},
        "finish_reason": "length",
    }
    assert ok.response["gemini"]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    bad = line_outcome({"key": "b", "error": {"code": 3, "message": "no", "status": "INVALID_ARGUMENT"}}, None)
    assert (bad.kind, bad.status_code, bad.error_code, bad.reason) == (
        OutcomeKind.FAILED,
        400,
        "INVALID_ARGUMENT",
        "no",
    )
    assert line_outcome({"key": "c", "error": {"code": 8}}, None).status_code == 429
    assert line_outcome({"key": "d", "error": {"code": 1, "message": "x"}}, None).kind is OutcomeKind.CANCELLED
    assert line_outcome({"key": "e", "error": {"status": "DEADLINE_EXCEEDED"}}, None).kind is OutcomeKind.EXPIRED
    vector = line_outcome({"key": "f", "response": {"embedding": {"values": [0.6, 0.8]}, "tokenCount": "7"}}, None)
    assert vector.response["data"][0]["embedding"] == [0.6, 0.8] and vector.usage == Usage(7)
    assert line_outcome({"response": {}}, None) is None


def test_registry_protocol_gemini_is_the_native_api(monkeypatch):
    """`gemini: {protocol: gemini}` gets Google's native base URL and GEMINI_API_KEY; plain `gemini` stays the
    OpenAI-compatible surface."""
    registry = ProviderRegistry.from_mapping(
        {
            "providers": {
                "gemini": {"protocol": "gemini", "models": ["gemini-*"]},
                "gemini-compat": {
                    "protocol": "openai",
                    "base_url": "https://x/v1",
                    "api_key_env": "K",
                    "models": ["g2-*"],
                },
            }
        }
    )
    native = registry.get("gemini")
    assert (native.protocol, native.base_url, native.api_key_env) == (
        "gemini",
        GEMINI_NATIVE_BASE_URL,
        "GEMINI_API_KEY",
    )
    assert native.caps.max_bytes == 2_000_000_000 and native.caps.max_embedding_inputs is None
    compat = ProviderRegistry.from_mapping({"providers": {"gemini": {"models": ["gemini-*"]}}}).get("gemini")
    assert compat.protocol == "openai" and compat.base_url.endswith("/v1beta/openai")


def _client(emu, **options):
    config = ProviderConfig(
        name="gemini", protocol="gemini", base_url=emu.base_url, api_key_env="UNUSED", api_key=emu.api_key
    )
    return build_client(config, retry=NO_WAIT, sleep=lambda s: None, **options)


def test_key_goes_in_x_goog_api_key_only():
    """Requests carry the key in x-goog-api-key, never in the URL or an Authorization header."""
    seen = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"candidates": [{"content": {"parts": [{"text": "ok"}]}}], "usageMetadata": {"promptTokenCount": 1}}
        return httpx.Response(200, json=body)

    config = ProviderConfig(name="g", protocol="gemini", base_url="https://g.test", api_key_env="X", api_key="sekret")
    with build_client(config, transport=httpx.MockTransport(respond)) as client:
        outcome = client.sync.call(LLMRequest("a", Endpoint.CHAT, "gemini-3-flash", {"messages": CHAT["messages"]}))
    assert outcome.kind is OutcomeKind.SUCCEEDED
    (request,) = seen
    assert request.url.path == "/v1beta/models/gemini-3-flash:generateContent"
    assert request.headers["x-goog-api-key"] == "sekret"
    assert "authorization" not in request.headers and "sekret" not in str(request.url)


def test_sync_lane_chat_and_embeddings_over_the_emulator(emulator):
    """The sync lane answers in the OpenAI shape with Gemini's usage; several embedding inputs use
    batchEmbedContents; a refusal is a FAILED outcome with Google's status."""
    with _client(emulator) as client:
        chat = client.sync.call(
            LLMRequest(
                "c",
                Endpoint.CHAT,
                "gemini-3-flash",
                {"messages": [{"role": "system", "content": "Labels: x, y"}, {"role": "user", "content": "y"}]},
            )
        )
        assert chat.kind is OutcomeKind.SUCCEEDED and chat.response["choices"][0]["message"]["content"] == "y"
        assert chat.usage.input_tokens == chat.response["gemini"]["usageMetadata"]["promptTokenCount"]
        embed = client.sync.call(
            LLMRequest("e", Endpoint.EMBEDDINGS, "gemini-embedding-001", {"input": ["a b", "c"], "dimensions": 16})
        )
        assert [len(d["embedding"]) for d in embed.response["data"]] == [16, 16] and embed.usage.input_tokens > 0
        bad = client.sync.call(LLMRequest("b", Endpoint.CHAT, "gemini-3-flash", {"contents": []}))
        assert (bad.kind, bad.status_code, bad.error_code) == (OutcomeKind.FAILED, 400, "INVALID_ARGUMENT")
        many = asyncio.run(
            client.sync.run_many(
                [
                    LLMRequest(
                        f"m{i}", Endpoint.CHAT, "gemini-3-flash", {"messages": [{"role": "user", "content": "q"}]}
                    )
                    for i in range(5)
                ]
            )
        )
        assert [o.kind for o in many] == [OutcomeKind.SUCCEEDED] * 5


def test_sync_lane_waits_out_a_429_burst(emulator):
    """429 RESOURCE_EXHAUSTED on the sync lane is retried by the shared retry policy until it succeeds."""
    emulator.set_profile({"sync_429_burst": 2, "retry_after_seconds": 0})
    with _client(emulator) as client:
        client.sync.retry = NO_WAIT
        outcome = client.sync.call(
            LLMRequest("r", Endpoint.CHAT, "gemini-3-flash", {"messages": [{"role": "user", "content": "q"}]})
        )
    assert outcome.kind is OutcomeKind.SUCCEEDED


def test_batch_lane_embeddings_land_in_the_vector_shape(emulator, tmp_path):
    """An embeddings batch (asyncBatchEmbedContent) reconciles every id into the same data[0].embedding shape."""
    emulator.set_profile({"batch_completion_seconds": 60})
    requests = [
        LLMRequest(f"e{i}", Endpoint.EMBEDDINGS, "gemini-embedding-001", {"input": f"chunk {i}", "dimensions": 8})
        for i in range(4)
    ]
    with _client(emulator) as client:
        lane = client.batch
        (shard,) = shard_requests(requests, ShardLimits.from_caps(client.config.caps), tmp_path, protocol="gemini")
        file_name = lane.upload(shard, intent_key="bp-embed")
        info = lane.create(shard, intent_key="bp-embed", fingerprint=shard.fingerprint, input_file_id=file_name)
        assert lane.find_by_intent("bp-embed").vendor_batch_id == info.vendor_batch_id
        emulator.advance(120)
        done = lane.get(info.vendor_batch_id)
        assert done.status is BatchStatus.COMPLETED and done.total == 4
        files = lane.download_results(done, tmp_path / "dl")
        outcomes = list(lane.iter_outcomes(files, [r.custom_id for r in requests], model="gemini-embedding-001"))
    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED] * 4
    assert all(len(o.response["data"][0]["embedding"]) == 8 and o.usage.input_tokens > 0 for o in outcomes)
    uploaded = orjson.loads((tmp_path / "dl" / "results.jsonl").read_bytes().splitlines()[0])
    assert uploaded["key"] == "e0"


def test_batch_lane_queue_full_and_cancel(emulator, tmp_path):
    """A 429 on create is QueueFullError; cancel answers the batch as it is, and on a batch that ended changes
    nothing."""
    requests = [
        LLMRequest(f"q{i}", Endpoint.CHAT, "gemini-3-flash", {"messages": [{"role": "user", "content": "hi"}]})
        for i in range(3)
    ]
    with _client(emulator) as client:
        lane = client.batch
        (shard,) = shard_requests(requests, ShardLimits.from_caps(client.config.caps), tmp_path, protocol="gemini")
        file_name = lane.upload(shard, intent_key="bp-q")
        emulator.set_profile({"enqueued_token_limits": {"gemini-3-flash": 5}})
        with pytest.raises(QueueFullError):
            lane.create(shard, intent_key="bp-q", fingerprint="f", input_file_id=file_name)
        emulator.set_profile({"batch_completion_seconds": 1000, "cancel_seconds": 10})
        info = lane.create(shard, intent_key="bp-q", fingerprint="f", input_file_id=file_name)
        assert not lane.cancel(info.vendor_batch_id).is_terminal
        emulator.advance(10)
        assert lane.cancel(info.vendor_batch_id).status is BatchStatus.CANCELLED


def test_cached_and_thinking_tokens_from_the_emulator_are_priced_at_their_rates(emulator):
    """A repeated long system prompt comes back as cachedContentTokenCount and a thinking budget as
    thoughtsTokenCount; the price book charges them at the cache-read and output rates."""
    system = "Labels: billing, bug, other\n" + " ".join(f"rule{i} applies to every ticket." for i in range(300))
    body = {
        "systemInstruction": {"parts": [{"text": system}]},
        "contents": [{"role": "user", "parts": [{"text": "my invoice is wrong"}]}],
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 64}},
    }
    book = PriceBook.default()
    with _client(emulator) as client:
        first = client.sync.call(LLMRequest("t1", Endpoint.CHAT, "gemini-3-flash", body))
        second = client.sync.call(LLMRequest("t2", Endpoint.CHAT, "gemini-3-flash", body))
    assert first.usage.cached_input_tokens == 0 and second.usage.cached_input_tokens >= 1024
    metadata = second.response["gemini"]["usageMetadata"]
    assert second.usage.cached_input_tokens == metadata["cachedContentTokenCount"]
    assert second.usage.reasoning_tokens == metadata["thoughtsTokenCount"] == 24
    assert second.usage.output_tokens == metadata["candidatesTokenCount"] + 24
    rates = book.price("gemini-3-flash").sync
    expected = (
        (second.usage.input_tokens - second.usage.cached_input_tokens) * rates.input
        + second.usage.cached_input_tokens * rates.cache_read
        + second.usage.output_tokens * rates.output
    ) / Decimal(1_000_000)
    assert book.cost("gemini-3-flash", second.usage, Lane.SYNC).cost_usd == expected


def test_native_bodies_are_estimated_like_translated_ones():
    """The offline estimate counts a native body's systemInstruction and contents as it counts the same
    prompt in the chat shape, so budgets hold for native bodies too."""
    from batch_pipelines.core.tokens import count_chat_prompt, count_embedding_input

    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]}
    native = generate_content_request(chat, "x")
    assert count_chat_prompt(native) == count_chat_prompt(chat) > 0
    embed = batch_line_request(Endpoint.EMBEDDINGS, {"input": "some text"}, "gemini-embedding-001", "y")
    assert count_embedding_input(embed) == count_embedding_input({"input": "some text"}) > 0
