"""The batch loop's shortcuts give exactly what the straightforward versions give."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from batch_pipelines.core import tokens
from batch_pipelines.emulator import accounting, models
from batch_pipelines.emulator.faults import LineDraws, stable_index

# Text with the characters that matter to tokenizers and word matching: ASCII words and
# separators, accents, CJK, emoji, odd whitespace and (where allowed) lone surrogates.
_PIECES = [
    "bill",
    "ing",
    "Refund",
    "REFUND",
    "technical",
    "issue",
    "-",
    "_",
    " ",
    "  ",
    "\n",
    "\t",
    ".",
    ",",
    "'s",
    "é",
    "ß",
    "K",
    "İ",
    "中文",
    "🙂",
    "\u00a0",
    "\u2028",
    "12",
    "n/a",
]
texts = st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)
any_text = st.one_of(texts, st.text(max_size=60), st.text(st.characters(exclude_categories=()), max_size=20))


@settings(max_examples=300, deadline=None)
@given(any_text)
@example("")
@example("a\ud800b")
@example("x" * 60_000)
def test_fresh_count_equals_the_shared_tokenizer(text):
    """count_fresh (the Rust counter) equals tokens.count_text on any text, including refused input."""
    try:
        expected: Any = tokens.count_text(text)
    except Exception as exc:  # the shared tokenizer's refusals must stay refusals
        expected = type(exc)
    try:
        found: Any = accounting.count_fresh(text)
    except Exception as exc:
        found = type(exc)
    assert found == expected


_NON_WORD = re.compile(r"[^0-9a-z]+")


def _reference_normalise(text: str) -> str:
    return " " + _NON_WORD.sub(" ", text.lower()).strip() + " "


def _reference_choose_label(values: tuple[str, ...], message: str) -> str:
    """The label matcher as first written: rewrite the message, then substring-test each label."""
    normalised = _reference_normalise(message)
    for value in values:
        norm = _reference_normalise(value)
        if norm.strip() and norm in normalised:
            return value
    return values[stable_index(message, len(values))]


@settings(max_examples=400, deadline=None)
@given(st.lists(texts.filter(bool), min_size=1, max_size=6).map(tuple), texts)
@example(("technical-issue", "billing"), "a Technical_Issue here")
@example(("technical issue",), "technicalissue")
@example(("bill",), "billing")
@example(("n/a", "a"), "N/A")
def test_label_matching_equals_the_rewrite_and_substring_rule(labels, message):
    """choose_label picks the same label as normalising both sides and testing for a substring."""
    normalised = tuple(models.normalise(label) for label in labels)
    assert models.choose_label(labels, normalised, message) == _reference_choose_label(labels, message)
    assert models.choose_label(labels, normalised, message, message.lower()) == _reference_choose_label(labels, message)


def _reference_split(body: dict[str, Any]) -> tuple[str, str]:
    """The prompt split as first written: the general loop for every shape."""
    messages = body.get("messages") or ()
    last_user_index = None
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "user":
            last_user_index = index
            break
    shared_parts: list[str] = []
    if body.get("system"):
        shared_parts.append(models._content_text(body["system"]))
    last_user = ""
    for index, message in enumerate(messages):
        text = models._content_text(message.get("content")) if isinstance(message, dict) else ""
        if index == last_user_index:
            last_user = text
        else:
            shared_parts.append(text)
    return (shared_parts[0] if len(shared_parts) == 1 else "\n".join(shared_parts)), last_user


contents = st.one_of(
    st.none(), texts, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}), max_size=2)
)
messages = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "user", "assistant"]), "content": contents}),
    st.just("not a message"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, max_size=4), st.one_of(st.none(), st.just(""), texts))
@example([{"role": "system", "content": "Labels: a, b"}, {"role": "user", "content": "a"}], None)
@example([{"role": "system", "content": "Labels: a, b"}, {"role": "user", "content": "a"}], "Be brief.")
@example([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], None)
@example(["not a message", {"role": "user", "content": [{"type": "text", "text": "a"}]}], None)
def test_prompt_split_equals_the_general_loop(message_list, system):
    """The two-message shortcut splits shared context and last user message like the general loop."""
    body: dict[str, Any] = {"messages": message_list}
    if system is not None:
        body["system"] = system
    assert models._split_prompt(body) == _reference_split(body)


@given(st.integers(0, 2**64 - 1), st.integers(0, 10_000), st.integers(0, 300))
def test_draw_blocks_equal_single_draws(base, start, count):
    """A block of seeded draws holds exactly the values and id stems of the per-line draws."""
    draws = LineDraws(0, "line", 0)
    draws._base = base  # every base, including ones whose sums wrap past 2**64
    block = draws.block(start, count)
    assert len(block) == count
    for offset in range(0, count, max(1, count // 17)):
        u_missing, u_error, u_kind, stem = draws.draw(start + offset)
        assert (block.u_missing[offset], block.u_error[offset], block.u_kind[offset]) == (u_missing, u_error, u_kind)
        assert block.stem_hex(offset) == f"{stem:032x}"
        assert block.low_hex(offset) == f"{stem & 0xFFFFFFFFFFFFFFFF:016x}"
