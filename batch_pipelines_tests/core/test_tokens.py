"""The offline tokenizer counts like tiktoken's o200k and handles both chat shapes."""

import orjson

from batch_pipelines.core import tokens


def test_known_token_ids_match_o200k():
    """'hello world' is two o200k tokens (tiktoken gives [24912, 2375])."""
    assert tokens.encode("hello world") == [24912, 2375]


def test_chat_prompt_counts_system_and_messages_with_overhead():
    """OpenAI and Anthropic shapes of the same prompt count the same tokens."""
    openai_body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]}
    anthropic_body = {
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}],
    }
    expected = tokens.count_text("Be brief.") + 2 + 2 * tokens.TOKENS_PER_MESSAGE + tokens.TOKENS_PER_REPLY
    assert tokens.count_chat_prompt(openai_body) == expected
    assert tokens.count_chat_prompt(anthropic_body) == expected


def test_very_long_text_is_counted_in_parts():
    """Text past the tokenizer's single-input limit is still counted."""
    text = "word " * 300_000
    assert tokens.count_text(text) >= 300_000


def test_embedding_inputs_are_counted():
    """A list of embedding inputs counts every text and reports how many inputs it has."""
    body = {"input": ["hello world", "hello"]}
    assert tokens.count_embedding_input(body) == 3
    assert tokens.embedding_input_count(body) == 2
    assert tokens.embedding_input_count({"input": "one"}) == 1


def test_encoding_follows_the_model():
    """Embedding models and the gpt-4/3.5 generation count in cl100k, gpt-4o and later in o200k."""
    assert tokens.encoding_for_model("text-embedding-3-small") == tokens.CL100K
    assert tokens.encoding_for_model("text-embedding-ada-002") == tokens.CL100K
    assert tokens.encoding_for_model("gpt-4") == tokens.CL100K
    assert tokens.encoding_for_model("gpt-4-turbo") == tokens.CL100K
    assert tokens.encoding_for_model("gpt-3.5-turbo") == tokens.CL100K
    assert tokens.encoding_for_model("gpt-4o-mini") == tokens.O200K
    assert tokens.encoding_for_model("gpt-4.1") == tokens.O200K
    assert tokens.encoding_for_model("gpt-5.4-mini") == tokens.O200K
    assert tokens.encoding_for_model("claude-sonnet-4.6") == tokens.O200K
    assert tokens.encoding_for_model(None) == tokens.O200K


def test_cl100k_gives_tiktokens_ids():
    """'hello world' is [15339, 1917] in cl100k (tiktoken), not the o200k ids."""
    assert tokens.encode("hello world", tokens.CL100K) == [15339, 1917]


def test_embedding_input_counts_in_the_models_encoding():
    """An embeddings body is counted in its model's encoding, where the two encodings differ."""
    text = "Batch inference trades latency for a fifty percent discount on tokens. " * 3 + "ünïcödé 東京 😀"
    body = {"model": "text-embedding-3-small", "input": text}
    assert tokens.count_text(text, tokens.CL100K) != tokens.count_text(text, tokens.O200K)
    assert tokens.count_embedding_input(body) == tokens.count_text(text, tokens.CL100K)
    assert (
        tokens.count_embedding_input({**body, "input": [text, [1, 2, 3]]}) == tokens.count_text(text, tokens.CL100K) + 3
    )
    assert tokens.count_embedding_input({**body, "input": [5, 6, 7, 8]}) == 4


def test_tools_and_response_format_count_as_input():
    """A chat body's tools and response_format add the tokens of their JSON to the prompt."""
    base = {"model": "gpt-5.4-mini", "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}
    with_both = {**base, "tools": [tool], "response_format": schema}
    extra = tokens.count_text(orjson.dumps([tool]).decode()) + tokens.count_text(orjson.dumps(schema).decode())
    assert extra > 0
    assert tokens.count_chat_prompt(with_both) == tokens.count_chat_prompt(base) + extra
    assert tokens.count_request_extras(with_both) == extra


def test_a_long_repeated_prompt_counts_the_same_every_time():
    """The remembered count of a long shared text equals a fresh count, line after line."""
    system = "Label the ticket with one of billing, bug, other. " * 60
    fresh = len(tokens.encode(system))
    bodies = [
        {"messages": [{"role": "system", "content": system + ""}, {"role": "user", "content": f"t {i}"}]}
        for i in range(5)
    ]
    counts = {tokens.count_chat_prompt(b) - tokens.count_text(f"t {i}") for i, b in enumerate(bodies)}
    assert counts == {fresh + 2 * tokens.TOKENS_PER_MESSAGE + tokens.TOKENS_PER_REPLY}
    assert tokens.count_text(system, tokens.CL100K) == len(tokens.encode(system, tokens.CL100K))


def test_text_with_a_lone_surrogate_is_counted():
    """A lone surrogate (not valid UTF-8) does not break counting."""
    assert tokens.count_text("abc \ud800 def") > 0
