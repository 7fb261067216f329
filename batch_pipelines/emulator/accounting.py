"""Token usage the way providers report it: prompt, completion and cached prompt tokens.

Counts come from the shared tokenizer (``batch_pipelines.core.tokens``, the model's encoding
through ``bpe-openai``), the same one the cost estimator uses, so estimates and "billed" usage
agree; tools and the response format count as input, as the vendors bill them.
Counts of repeated text (system prompts, labels) are memoised: batch workloads repeat them on
every line.

Prompt caching follows OpenAI's rule: a prompt of 1,024 tokens or more whose leading tokens
repeat an earlier request's reports the longest repeated prefix, counted in steps of 128 from
1,024, as cached. Prefixes are compared by hashing the token stream at those boundaries only.
"""

from __future__ import annotations

import hashlib
import threading
from array import array
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import bpe_openai

from batch_pipelines.core import tokens

CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128
# Stands in for the role markers count_chat_prompt charges per message: two prompts differ
# at a message boundary even if their texts concatenate to the same string.
_MESSAGE_MARKER = array("I", [0xFFFFFFFF] * tokens.TOKENS_PER_MESSAGE).tobytes()
_MAX_SEEN_PREFIXES = 2_000_000


def count_fresh(text: str) -> int:
    """``tokens.count_text(text)``, for text seen once (the last user message of a line)."""
    return tokens.count_text(text)


count_text = lru_cache(maxsize=1 << 17)(count_fresh)


@lru_cache(maxsize=8192)
def _segment(text: str) -> bytes:
    """One message as token ids (4 bytes each) behind its role markers; memoised for the
    long shared parts (system prompts) that batch lines repeat."""
    return _MESSAGE_MARKER + array("I", tokens.encode(text)).tobytes() if text else _MESSAGE_MARKER


def prompt_tokens(body: dict[str, Any]) -> int:
    """Equal to ``tokens.count_chat_prompt(body)`` (the model's encoding, tools and response format included)."""
    return tokens.count_chat_prompt(body)


def embedding_tokens(body: dict[str, Any]) -> int:
    """Equal to ``tokens.count_embedding_input(body)``: OpenAI's embedding models count in cl100k_base."""
    return sum(embedding_input_tokens(body))


def embedding_input_tokens(body: dict[str, Any]) -> list[int]:
    """Tokens of each input of an embeddings request, in the model's encoding (token ids count their length)."""
    encoding = tokens.encoding_for_model(body.get("model"))
    value = body.get("input")
    if isinstance(value, str):
        return [tokens.count_text(value, encoding)]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [len(value)]  # one input given as token ids
        return [
            tokens.count_text(v, encoding) if isinstance(v, str) else len(v) if isinstance(v, list) else 1
            for v in value
        ]
    return []


class _PrefixWalk:
    """Hash state while walking a token stream, with digests taken at cache boundaries."""

    __slots__ = ("hasher", "position", "next_boundary", "digests")

    def __init__(self) -> None:
        self.hasher = hashlib.blake2b(digest_size=16)
        self.position = 0
        self.next_boundary = CACHE_MIN_TOKENS
        self.digests: list[tuple[int, bytes]] = []

    def copy(self) -> _PrefixWalk:
        other = _PrefixWalk.__new__(_PrefixWalk)
        other.hasher = self.hasher.copy()
        other.position = self.position
        other.next_boundary = self.next_boundary
        other.digests = list(self.digests)
        return other

    def feed(self, segment: bytes) -> None:
        count = len(segment) // 4
        offset = 0
        while self.position + (count - offset) >= self.next_boundary:
            take = self.next_boundary - self.position
            self.hasher.update(segment[offset * 4 : (offset + take) * 4])
            offset += take
            self.position = self.next_boundary
            self.digests.append((self.position, self.hasher.copy().digest()))
            self.next_boundary += CACHE_STEP_TOKENS
        self.hasher.update(segment[offset * 4 :])
        self.position += count - offset


@lru_cache(maxsize=256)
def _walk_after_first(text: str) -> _PrefixWalk:
    # The first part is usually a long shared system prompt: hash it once.
    walk = _PrefixWalk()
    walk.feed(_segment(text))
    return walk


class PromptCache:
    """Which long prompt prefixes were seen before, across sync calls and batch lines."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()
        self._last_first: tuple[str | None, int] = (None, 0)
        self._last_walk: tuple[str | None, _PrefixWalk | None] = (None, None)

    def _first_walk(self, first: str) -> _PrefixWalk:
        """The hash walk over the first part, shared by every prompt that starts with it."""
        last_text, walk = self._last_walk
        if walk is None or not (first is last_text or first == last_text):
            walk = _walk_after_first(first)
            self._last_walk = (first, walk)
        return walk

    def measure(self, body: dict[str, Any]) -> tuple[int, int]:
        """(prompt tokens, cached prompt tokens) of a chat or messages request.

        The prompt count equals ``tokens.count_chat_prompt(body)``: each part's segment holds
        its tokens plus the per-message markers, so one encoding serves both counts.
        """
        return self.measure_parts(tokens.prompt_text(body))

    def measure_parts(self, parts: Sequence[str]) -> tuple[int, int]:
        """``measure`` of a prompt given as its text parts (``tokens.prompt_text``)."""
        if not parts:
            return tokens.TOKENS_PER_REPLY, 0
        # The first part is usually a system prompt every line repeats, in a fresh string
        # object: comparing it with the previous line's is far cheaper than hashing it for the
        # memos. A tuple is replaced whole, so threads see a consistent entry.
        first = parts[0]
        if len(parts) == 1:
            prompt = count_fresh(first)
        else:
            last_first, first_count = self._last_first
            if not (first is last_first or first == last_first):
                first_count = count_text(first)
                self._last_first = (first, first_count)
            # Middle parts repeat across lines (memoised); the last one rarely does.
            prompt = first_count + count_fresh(parts[-1])
            if len(parts) > 2:
                prompt += sum(count_text(p) for p in parts[1:-1])
        prompt += tokens.TOKENS_PER_MESSAGE * len(parts) + tokens.TOKENS_PER_REPLY
        if prompt < CACHE_MIN_TOKENS:
            return prompt, 0
        walk = self._first_walk(first).copy()
        for part in parts[1:]:
            walk.feed(_segment(part))
        if not walk.digests:
            return prompt, 0
        cached = 0
        with self._lock:
            seen = self._seen
            for boundary, digest in walk.digests:
                if digest in seen:
                    cached = boundary
            if len(seen) > _MAX_SEEN_PREFIXES:
                seen.clear()  # a cache that forgets, as real ones do
            seen.update(d for _, d in walk.digests)
        return prompt, cached


@lru_cache(maxsize=1)
def _encoding() -> Any:
    return bpe_openai.get_encoding(tokens.ENCODING_NAME)


def truncate_to_tokens(text: str, limit: int) -> tuple[str, int, bool]:
    """``text`` cut to at most ``limit`` tokens: (text, its token count, whether it was cut)."""
    count = count_text(text)
    if count <= limit:
        return text, count, False
    ids = tokens.encode(text)[: max(limit, 0)]
    return _encoding().decode(ids), len(ids), True
