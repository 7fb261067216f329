"""Deterministic "models": answers that depend only on the request.

The conventions (documented in docs/emulator.md, relied on by the bundled workloads):

- Classification: a prompt line starting ``Labels:`` or ``Allowed labels:`` lists the labels;
  the answer is the first label whose words appear in the last user message, else one picked
  by a stable hash of that message. With probability ``off_list_rate`` (seeded per custom_id,
  or per prompt on the sync lane) the answer is an off-list word such as ``unsure``.
- Judge: a prompt mentioning "judge" or "score" with ``Answer:`` and ``Reference:`` sections
  gets ``{"score": 1-5, "rationale": "..."}`` from the word overlap of the two sections.
- Summary/report: a prompt mentioning "summar" or "report" gets a markdown title and 2-4
  extractive bullets from the user's text.
- ``response_format`` with a JSON schema gets JSON that validates against the schema
  (``structured.py``, whose ``answer_for`` is the entry point).
- Anything else gets a short reply quoting the start of the last user message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from batch_pipelines.emulator.faults import chance, stable_index

OFF_LIST_WORDS = ("unsure", "unknown", "other_label", "n/a")
_LABELS_LINE = re.compile(r"^[ \t]*(?:allowed labels|labels)[ \t]*:[ \t]*(.+?)[ \t]*$", re.IGNORECASE | re.MULTILINE)
_NON_WORD = re.compile(r"[^0-9a-z]+")
_WORD = re.compile(r"[0-9A-Za-z]+")
_SECTION = re.compile(
    r"^[ \t]*(question|answer|reference|criteria|rubric|context|input)[ \t]*:", re.IGNORECASE | re.MULTILINE
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MARKDOWN_LEAD = re.compile(r"^[\s#>*\-+\d.)]+")


@dataclass(frozen=True, slots=True)
class ContextFeatures:
    """What the shared part of a prompt (system and earlier turns) asks for; memoised."""

    labels: tuple[str, ...]
    normalised_labels: tuple[str, ...]
    mentions_judge: bool
    mentions_summary: bool


def normalise(text: str) -> str:
    return " " + _NON_WORD.sub(" ", text.lower()).strip() + " "


def _features(text: str) -> ContextFeatures:
    labels: tuple[str, ...] = ()
    for match in _LABELS_LINE.finditer(text):
        found = tuple(
            label
            for label in (raw.strip().strip("`'\"").rstrip(".").strip() for raw in match.group(1).split(","))
            if label
        )
        if found:
            labels = found
    lowered = text.lower()
    return ContextFeatures(
        labels=labels,
        normalised_labels=tuple(normalise(label) for label in labels),
        mentions_judge="judge" in lowered or "score" in lowered,
        mentions_summary="summar" in lowered or "report" in lowered,
    )


context_features = lru_cache(maxsize=4096)(_features)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


@dataclass(frozen=True, slots=True)
class PromptView:
    shared: str  # system prompt and every turn before the last user message
    last_user: str
    features: ContextFeatures

    @property
    def full_text(self) -> str:
        return f"{self.shared}\n{self.last_user}" if self.shared else self.last_user


def _split_prompt(body: dict[str, Any]) -> tuple[str, str]:
    """(shared, last user message): the system prompt and every turn but the last user message,
    joined by newlines, and that message."""
    messages = body.get("messages") or ()
    system = body.get("system")
    if not system and isinstance(messages, list) and len(messages) == 2:
        # The common batch shape, one turn of context then the user turn: no loops, no copies.
        first, last = messages
        if isinstance(last, dict) and last.get("role") == "user":
            return (_content_text(first.get("content")) if isinstance(first, dict) else ""), _content_text(
                last.get("content")
            )
    last_user_index = None
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "user":
            last_user_index = index
            break
    shared_parts: list[str] = []
    if system:
        shared_parts.append(_content_text(system))
    last_user = ""
    for index, message in enumerate(messages):
        text = _content_text(message.get("content")) if isinstance(message, dict) else ""
        if index == last_user_index:
            last_user = text
        else:
            shared_parts.append(text)
    # One system prompt plus the user turn: no string copy then.
    shared = shared_parts[0] if len(shared_parts) == 1 else "\n".join(shared_parts)
    return shared, last_user


# The last shared text and its features. Batch lines repeat one long system prompt in fresh
# string objects: comparing with the previous line's copy is far cheaper than hashing it for
# the memo. A tuple is replaced whole, so threads see a consistent pair.
_last_context: tuple[str | None, ContextFeatures | None] = (None, None)


def _shared_features(shared: str) -> ContextFeatures:
    global _last_context
    last_text, last_features = _last_context
    if last_features is not None and (shared is last_text or shared == last_text):
        return last_features
    features = context_features(shared)
    _last_context = (shared, features)
    return features


def _prompt_features(shared: str, last_user: str, lowered: str) -> ContextFeatures:
    features = _shared_features(shared)
    # The last user message differs on every line: look at it without memoising it, and only
    # run the regexes when a cheap substring test says an instruction may be there.
    if "labels" in lowered or "judge" in lowered or "score" in lowered or "summar" in lowered or "report" in lowered:
        user_features = _features(last_user)
        features = ContextFeatures(
            labels=user_features.labels or features.labels,
            normalised_labels=user_features.normalised_labels or features.normalised_labels,
            mentions_judge=features.mentions_judge or user_features.mentions_judge,
            mentions_summary=features.mentions_summary or user_features.mentions_summary,
        )
    return features


def view_prompt(body: dict[str, Any]) -> PromptView:
    shared, last_user = _split_prompt(body)
    return PromptView(shared, last_user, _prompt_features(shared, last_user, last_user.lower()))


@lru_cache(maxsize=4096)
def _cached_label_matchers(normalised: tuple[str, ...]) -> tuple[tuple[str, bool, re.Pattern[str] | None], ...]:
    """Per normalised label: its words joined by spaces, whether it has several, and a regex
    that finds those words whole and in order in lowercased text.

    ``" w1 w2 " in normalise(text)`` holds exactly when the lowercased text has ``w1`` and
    ``w2`` as whole alphanumeric runs separated only by other characters, which the regex
    checks without rewriting the text.
    """
    out = []
    for norm in normalised:
        probe = norm.strip()
        words = probe.split(" ")
        pattern = (
            re.compile(r"(?<![0-9a-z])" + r"[^0-9a-z]+".join(map(re.escape, words)) + r"(?![0-9a-z])")
            if probe
            else None
        )
        out.append((probe, " " in probe, pattern))
    return tuple(out)


# Batch lines share one label tuple object (memoised features): skip hashing it every line.
_last_matchers: tuple[tuple[str, ...] | None, tuple[tuple[str, bool, re.Pattern[str] | None], ...]] = (None, ())


def _label_matchers(normalised: tuple[str, ...]) -> tuple[tuple[str, bool, re.Pattern[str] | None], ...]:
    global _last_matchers
    last, matchers = _last_matchers
    if normalised is last:
        return matchers
    matchers = _cached_label_matchers(normalised)
    _last_matchers = (normalised, matchers)
    return matchers


def choose_label(values: tuple[str, ...], normalised: tuple[str, ...], message: str, lowered: str | None = None) -> str:
    """The first value whose words appear in ``message``, else a stable pick by hash.

    ``lowered`` is ``message.lower()`` when the caller has it already.
    """
    if lowered is None:
        lowered = message.lower()
    for value, (probe, several, pattern) in zip(values, _label_matchers(normalised)):
        # A cheap substring test first; the whole-word check only when it could match.
        if probe and (several or probe in lowered) and pattern is not None and pattern.search(lowered):
            return value
    return values[stable_index(message, len(values))]


def off_list_word(labels: tuple[str, ...]) -> str:
    lowered = {label.lower() for label in labels}
    return next(word for word in OFF_LIST_WORDS if word not in lowered)


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _sections(text: str) -> dict[str, str]:
    matches = list(_SECTION.finditer(text))
    out: dict[str, str] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        out[match.group(1).lower()] = text[match.end() : end].strip()
    return out


def judge(view: PromptView) -> tuple[int, str] | None:
    """Score 1-5 from the word overlap of the Answer and Reference sections, if present."""
    if not view.features.mentions_judge:
        return None
    sections = _sections(view.last_user)
    if "answer" not in sections or "reference" not in sections:
        sections = _sections(view.full_text)
        if "answer" not in sections or "reference" not in sections:
            return None
    answer = {w.lower() for w in _words(sections["answer"])}
    reference = {w.lower() for w in _words(sections["reference"])}
    if not answer and not reference:
        return 5, "Both the answer and the reference are empty."
    shared = answer & reference
    overlap = len(shared) / len(answer | reference)
    score = max(1, min(5, 1 + int(overlap * 4 + 0.5)))
    return score, f"The answer shares {len(shared)} of {len(reference)} reference words."


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    for line in text.splitlines():
        line = _MARKDOWN_LEAD.sub("", line).strip()
        if line:
            out.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return out


def title_words(text: str, count: int = 8) -> str:
    words = _words(text)[:count]
    return " ".join(words) if words else "Summary"


def summary(view: PromptView) -> str:
    text = view.last_user or view.shared
    sentences = _sentences(text)[:4]
    if len(sentences) < 2:
        words = (sentences[0] if sentences else "").split()
        half = max(1, len(words) // 2)
        sentences = [" ".join(words[:half]) or "(no content)", " ".join(words[half:]) or "(no further content)"]
    bullets = "\n".join(f"- {' '.join(s.split()[:40])}" for s in sentences)
    return f"# {title_words(text)}\n\n{bullets}"


def default_reply(view: PromptView) -> str:
    words = _words(view.last_user)[:12]
    return "Emulated reply: " + (" ".join(words) if words else "no user message.")


def two_turn_texts(body: dict[str, Any]) -> tuple[str, str] | None:
    """(context, user message) for the usual batch line: exactly one turn of plain-text context
    then the user's plain-text turn, no system field and no response_format. None otherwise.

    For such a body the prompt parts are these two texts and ``_split_prompt`` returns them, so
    callers may answer and count from them without walking the body again.
    """
    messages = body.get("messages")
    if (
        type(messages) is not list
        or len(messages) != 2
        or body.get("system")
        or body.get("response_format") is not None
    ):
        return None
    first, last = messages
    if type(first) is not dict or type(last) is not dict or last.get("role") != "user":
        return None
    context = first.get("content")
    user = last.get("content")
    if type(context) is not str or type(user) is not str:
        return None
    return context, user


def answer_text(body: dict[str, Any], *, key: str, seed: int, off_list_rate: float) -> str:
    """The assistant's text for a chat or messages request (no response_format)."""
    shared, last_user = _split_prompt(body)
    return answer_turns(shared, last_user, key=key, seed=seed, off_list_rate=off_list_rate)


def answer_turns(shared: str, last_user: str, *, key: str, seed: int, off_list_rate: float) -> str:
    """``answer_text`` from the prompt already split into shared context and last user message."""
    lowered = last_user.lower()
    features = _prompt_features(shared, last_user, lowered)
    if features.labels:
        if off_list_rate > 0 and chance(seed, "off_list", key) < off_list_rate:
            return off_list_word(features.labels)
        return choose_label(features.labels, features.normalised_labels, last_user, lowered)
    view = PromptView(shared, last_user, features)
    verdict = judge(view)
    if verdict is not None:
        score, rationale = verdict
        return orjson.dumps({"score": score, "rationale": rationale}).decode()
    if features.mentions_summary:
        return summary(view)
    return default_reply(view)
