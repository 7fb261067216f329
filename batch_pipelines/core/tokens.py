"""Offline token counting: the one tokenizer the estimator and the emulator share.

We use o200k_base through the ``bpe-openai`` package, which ships its vocabulary (tiktoken
downloads it at first use and fails offline) and gives the same ids as tiktoken. Counts for
non-OpenAI models are estimates: close enough to budget with, labelled as estimates.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import bpe_openai

ENCODING_NAME = "o200k_base"
# bpe-openai refuses single inputs of 1M characters or more; longer text is counted in parts.
_MAX_CHARS = 500_000
# Chat formats add a few tokens per message (role markers) and a few to prime the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3


@lru_cache(maxsize=1)
def _encoding() -> Any:
    return bpe_openai.get_encoding(ENCODING_NAME)


def count_text(text: str) -> int:
    if not text:
        return 0
    enc = _encoding()
    if len(text) < _MAX_CHARS:
        return len(enc.encode_ordinary(text))
    return sum(len(enc.encode_ordinary(text[i : i + _MAX_CHARS])) for i in range(0, len(text), _MAX_CHARS))


def encode(text: str) -> list[int]:
    enc = _encoding()
    if len(text) < _MAX_CHARS:
        return list(enc.encode_ordinary(text))
    out: list[int] = []
    for i in range(0, len(text), _MAX_CHARS):
        out.extend(enc.encode_ordinary(text[i : i + _MAX_CHARS]))
    return out


def _content_text(content: Any) -> str:
    """Text of a message's content: a string, or a list of typed parts (OpenAI and Anthropic)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def prompt_text(body: dict[str, Any]) -> list[str]:
    """The prompt's text segments in order: system first, then each message."""
    parts: list[str] = []
    system = body.get("system")  # Anthropic puts the system prompt beside the messages
    if system:
        parts.append(_content_text(system))
    for message in body.get("messages") or ():
        parts.append(_content_text(message.get("content")))
    return parts


def count_chat_prompt(body: dict[str, Any]) -> int:
    """Input tokens of a chat or messages request body (OpenAI or Anthropic shape)."""
    parts = prompt_text(body)
    return sum(count_text(p) for p in parts) + TOKENS_PER_MESSAGE * len(parts) + TOKENS_PER_REPLY


def count_embedding_input(body: dict[str, Any]) -> int:
    value = body.get("input")
    if isinstance(value, str):
        return count_text(value)
    if isinstance(value, list):
        return sum(count_text(v) if isinstance(v, str) else len(v) for v in value)
    return 0


def embedding_input_count(body: dict[str, Any]) -> int:
    """How many embedding inputs a request carries (batches cap their sum)."""
    value = body.get("input")
    return len(value) if isinstance(value, list) and value and not isinstance(value[0], int) else 1
