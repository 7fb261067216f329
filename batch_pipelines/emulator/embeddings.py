"""Deterministic embeddings: hashed bag of words, L2-normalised.

Each lowercased word adds +1 or -1 (by hash) to one coordinate (by hash), so texts that share
words share coordinates and have a higher cosine similarity than unrelated texts. A text with
no words gets a fixed unit vector of its own.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import sys
from array import array
from functools import lru_cache

_WORD = re.compile(r"[0-9a-z]+")


@lru_cache(maxsize=1 << 16)
def _slot(word: str) -> tuple[int, float]:
    digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
    return digest >> 1, 1.0 if digest & 1 else -1.0


def embed(text: str, dimensions: int) -> list[float]:
    weights: dict[int, float] = {}
    words = _WORD.findall(text.lower()) or ["\x00empty"]
    for word in words:
        slot, sign = _slot(word)
        index = slot % dimensions
        weights[index] = weights.get(index, 0.0) + sign
    norm = math.sqrt(sum(w * w for w in weights.values()))
    if norm == 0:  # every word cancelled out: fall back to the first word's coordinate
        weights = {_slot(words[0])[0] % dimensions: 1.0}
        norm = 1.0
    vector = [0.0] * dimensions
    for index, weight in weights.items():
        vector[index] = weight / norm
    return vector


def encode_base64(vector: list[float]) -> str:
    """The vector as little-endian float32 bytes in base64, as OpenAI's ``encoding_format``."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def input_texts(value: object) -> list[str] | None:
    """The inputs of an embeddings request as texts; token-id inputs become their ids as words."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [" ".join(f"t{v}" for v in value)]
        texts: list[str] = []
        for item in value:
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in item):
                texts.append(" ".join(f"t{v}" for v in item))
            else:
                return None
        return texts
    return None
