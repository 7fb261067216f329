"""Offline token counting: the one tokenizer the estimator and the emulator share.

We use the ``bpe-openai`` package, which ships the o200k_base and cl100k_base vocabularies
(tiktoken downloads them at first use and fails offline) and gives the same ids as tiktoken.
The encoding follows the model, as tiktoken's model table does: cl100k_base for OpenAI's
embedding models and the gpt-4 / gpt-3.5 generation, o200k_base for gpt-4o and later (and, as
an estimate, for every other vendor's model). A price book entry may name the encoding itself.

Counts for non-OpenAI models are estimates: close enough to budget with, labelled as estimates.

Batch work repeats long text on every line (a classification system prompt of ~1,600 tokens,
a tool list, a JSON schema): long texts are counted once and remembered, so a partition of
100,000 lines tokenises its shared prefix once instead of 100,000 times.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import bpe_openai
import orjson
from bpe_openai import _bindings as bpe_backend

O200K = "o200k_base"
CL100K = "cl100k_base"
ENCODINGS = (O200K, CL100K)
ENCODING_NAME = O200K  # the default, for models the table below does not place
# bpe-openai refuses single inputs of 1M characters or more; longer text is counted in parts.
_MAX_CHARS = 500_000
# Up to this many characters (at most 4 bytes each) the Rust counter never reaches the
# tokenizer's 200,000-token chunk limit, so it can count without building the id list.
_FAST_COUNT_MAX_CHARS = 50_000
# Texts at least this long are remembered: shared prompts, tool lists and schemas repeat on
# every line of a batch, while a short user message rarely does and is cheaper to count again.
_MEMO_MIN_CHARS = 256
_MEMO_ENTRIES = 1024
# Chat formats add a few tokens per message (role markers) and a few to prime the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
# Request fields outside the messages that the model reads and the vendor bills as input.
_BILLED_EXTRAS = ("tools", "response_format")
# tiktoken's model table, by prefix: the older generation on cl100k_base. Longer prefixes
# first, so "gpt-4o" and "gpt-4.1" are not caught by "gpt-4".
_CL100K_PREFIXES = ("text-embedding-3-", "text-embedding-ada-", "gpt-3.5-", "gpt-35-")
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o")


def encoding_for_model(model: str | None) -> str:
    """The encoding OpenAI uses for ``model`` (o200k_base for models it does not know)."""
    if not model:
        return ENCODING_NAME
    name = model.removeprefix("ft:").removeprefix("openai/")
    if name.startswith(_O200K_PREFIXES):
        return O200K
    if name.startswith(_CL100K_PREFIXES) or name == "gpt-4" or name.startswith("gpt-4-"):
        return CL100K
    return O200K


@lru_cache(maxsize=len(ENCODINGS))
def _encoding(name: str) -> Any:
    return bpe_openai.get_encoding(name)


@lru_cache(maxsize=len(ENCODINGS))
def _fast_counter(name: str) -> Any:
    return bpe_backend.tokenizer_for_encoding(name).count


def _count_fresh(text: str, encoding: str) -> int:
    if len(text) <= _FAST_COUNT_MAX_CHARS:
        try:
            return int(_fast_counter(encoding)(text))
        except UnicodeEncodeError:
            pass  # a lone surrogate: the Python wrapper below takes it
    return len(encode(text, encoding))


_count_remembered = lru_cache(maxsize=_MEMO_ENTRIES)(_count_fresh)


def count_text(text: str, encoding: str = ENCODING_NAME) -> int:
    if not text:
        return 0
    if len(text) >= _MEMO_MIN_CHARS:
        return _count_remembered(text, encoding)
    return _count_fresh(text, encoding)


def encode(text: str, encoding: str = ENCODING_NAME) -> list[int]:
    enc = _encoding(encoding)
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


def _gemini_text(content: Any) -> str:
    """Text of a Gemini ``Content`` (``{"parts": [{"text"}, ...]}``)."""
    return _content_text(content.get("parts")) if isinstance(content, dict) else ""


def prompt_text(body: dict[str, Any]) -> list[str]:
    """The prompt's text segments in order: system first, then each message.

    Reads the OpenAI and Anthropic shapes, and Gemini's native one (``systemInstruction`` and
    ``contents``), so a native body is estimated like a translated one.
    """
    parts: list[str] = []
    system = body.get("system")  # Anthropic puts the system prompt beside the messages
    if system:
        parts.append(_content_text(system))
    for message in body.get("messages") or ():
        parts.append(_content_text(message.get("content")))
    instruction = body.get("systemInstruction", body.get("system_instruction"))
    if instruction:
        parts.append(_gemini_text(instruction))
    for content in body.get("contents") or ():
        parts.append(_gemini_text(content))
    return parts


def extras_text(body: dict[str, Any]) -> list[str]:
    """Billed request fields beside the messages (tools, response_format), as compact JSON."""
    return [orjson.dumps(body[key]).decode() for key in _BILLED_EXTRAS if body.get(key)]


def count_request_extras(body: dict[str, Any], encoding: str | None = None) -> int:
    """Input tokens of the tools and the response format a chat request carries."""
    enc = encoding or encoding_for_model(body.get("model"))
    return sum(count_text(text, enc) for text in extras_text(body))


def count_chat_prompt(body: dict[str, Any], encoding: str | None = None) -> int:
    """Input tokens of a chat or messages request body (OpenAI or Anthropic shape).

    ``encoding`` defaults to the one of the body's model.
    """
    enc = encoding or encoding_for_model(body.get("model"))
    parts = prompt_text(body)
    return (
        sum(count_text(p, enc) for p in parts)
        + TOKENS_PER_MESSAGE * len(parts)
        + TOKENS_PER_REPLY
        + count_request_extras(body, enc)
    )


def count_embedding_input(body: dict[str, Any], encoding: str | None = None) -> int:
    """Input tokens of an embeddings request body (``encoding`` defaults to the model's)."""
    enc = encoding or encoding_for_model(body.get("model"))
    value = body.get("input")
    if value is None and isinstance(body.get("content"), dict):  # Gemini's native EmbedContentRequest
        value = _gemini_text(body["content"])
    if isinstance(value, str):
        return count_text(value, enc)
    if isinstance(value, list):
        # Pre-tokenised input: a list of token ids, or a list of such lists.
        return sum(count_text(v, enc) if isinstance(v, str) else len(v) if isinstance(v, list) else 1 for v in value)
    return 0


def embedding_input_count(body: dict[str, Any]) -> int:
    """How many embedding inputs a request carries (batches cap their sum)."""
    value = body.get("input")
    return len(value) if isinstance(value, list) and value and not isinstance(value[0], int) else 1
