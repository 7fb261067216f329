"""Token usage the way providers report it: prompt, completion and cached prompt tokens.

Counts come from the shared tokenizer (``batch_pipelines.core.tokens``, o200k_base through
``bpe-openai``), the same one the cost estimator uses, so estimates and "billed" usage agree.
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

count_text = lru_cache(maxsize=1 << 17)(tokens.count_text)


@lru_cache(maxsize=8192)
def _segment(text: str) -> bytes:
    """One message as token ids (4 bytes each) behind its role markers; memoised for the
    long shared parts (system prompts) that batch lines repeat."""
    return _MESSAGE_MARKER + array("I", tokens.encode(text)).tobytes() if text else _MESSAGE_MARKER


def prompt_tokens(body: dict[str, Any]) -> int:
    """Equal to ``tokens.count_chat_prompt(body)``, with memoised per-part counts."""
    parts = tokens.prompt_text(body)
    return sum(count_text(p) for p in parts) + tokens.TOKENS_PER_MESSAGE * len(parts) + tokens.TOKENS_PER_REPLY


def embedding_tokens(body: dict[str, Any]) -> int:
    value = body.get("input")
    if isinstance(value, str):
        return count_text(value)
    if isinstance(value, list):
        return sum(count_text(v) if isinstance(v, str) else len(v) if isinstance(v, list) else 1 for v in value)
    return 0


class _PrefixWalk:
    """Hash state while walking a token stream, with digests taken at cache boundaries."""

    __slots__ = ("hasher", "position", "next_boundary", "digests")

    def __init__(self) -> None:
        self.hasher = hashlib.blake2b(digest_size=16)
        self.position = 0
        self.next_boundary = CACHE_MIN_TOKENS
        self.digests: list[tuple[int, bytes]] = []

    def copy(self) -> "_PrefixWalk":
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

    def measure(self, body: dict[str, Any]) -> tuple[int, int]:
        """(prompt tokens, cached prompt tokens) of a chat or messages request.

        The prompt count equals ``tokens.count_chat_prompt(body)``: each part's segment holds
        its tokens plus the per-message markers, so one encoding serves both counts.
        """
        parts = tokens.prompt_text(body)
        if not parts:
            return tokens.TOKENS_PER_REPLY, 0
        # Shared parts repeat across lines (memoised); the last one rarely does.
        prompt = sum(count_text(p) for p in parts[:-1]) + tokens.count_text(parts[-1])
        prompt += tokens.TOKENS_PER_MESSAGE * len(parts) + tokens.TOKENS_PER_REPLY
        if prompt < CACHE_MIN_TOKENS:
            return prompt, 0
        segments = [_segment(p) for p in parts]
        walk = _walk_after_first(parts[0]).copy()
        for segment in segments[1:]:
            walk.feed(segment)
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
