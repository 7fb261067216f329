"""The offline tokenizer counts like tiktoken's o200k and handles both chat shapes."""

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
