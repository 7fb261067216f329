"""Deterministic answers, embeddings, token accounting, profiles and the clock (no HTTP)."""

from __future__ import annotations

import math

import orjson
import pytest

from batch_pipelines.core import tokens
from batch_pipelines.core.errors import ConfigError
from batch_pipelines.emulator import accounting
from batch_pipelines.emulator.clock import VirtualClock, resume_virtual_time
from batch_pipelines.emulator.embeddings import embed
from batch_pipelines.emulator.models import OFF_LIST_WORDS
from batch_pipelines.emulator.profile import Profile, bundled_profiles, load_profile
from batch_pipelines.emulator.structured import answer_for

SYSTEM = "Classify the support ticket.\nAllowed labels: billing, shipping, technical_issue"


def chat(user: str, system: str | None = SYSTEM, **extra):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return {"model": "gpt-5.4", "messages": messages, **extra}


def answer(body, key="k", off_list_rate=0.0):
    return answer_for(body, key=key, seed=0, off_list_rate=off_list_rate)


@pytest.mark.parametrize(
    "user, expected",
    [
        ("my SHIPPING is late", "shipping"),
        ("billing and shipping both wrong", "billing"),
        ("a technical issue with the app", "technical_issue"),
    ],
)
def test_classification_picks_the_first_label_named_in_the_message(user, expected):
    """The answer is the first label (in list order) whose words appear in the last user message."""
    assert answer(chat(user)) == expected


def test_classification_without_a_named_label_is_stable_and_on_list():
    """With no label named, the pick depends only on the message and is always one of the labels."""
    picks = {answer(chat(f"hello {i}")) for i in range(30)}
    assert picks <= {"billing", "shipping", "technical_issue"} and len(picks) > 1
    assert answer(chat("hello 7")) == answer(chat("hello 7"))


def test_off_list_rate_gives_off_list_words_seeded_per_key():
    """off_list_rate makes that share of answers an off-list word, the same one per key every time."""
    answers = [answer(chat("my shipping"), key=f"id{i}", off_list_rate=0.3) for i in range(400)]
    off = [a for a in answers if a not in ("billing", "shipping", "technical_issue")]
    assert set(off) <= set(OFF_LIST_WORDS) and 80 < len(off) < 160
    assert answers == [answer(chat("my shipping"), key=f"id{i}", off_list_rate=0.3) for i in range(400)]


def test_summary_is_markdown_with_title_and_extractive_bullets():
    """A summarise prompt gets '# <first words>' and 2-4 bullets taken from the user text."""
    text = "Revenue grew in March. Costs fell sharply. Two stores opened. Staff turnover rose. Nothing else."
    reply = answer(chat(text, system="Write a short report of the day."))
    lines = reply.splitlines()
    assert lines[0] == "# Revenue grew in March Costs fell sharply Two"
    bullets = [line for line in lines if line.startswith("- ")]
    assert bullets == [
        "- Revenue grew in March.",
        "- Costs fell sharply.",
        "- Two stores opened.",
        "- Staff turnover rose.",
    ]
    assert (
        len(
            [
                b
                for b in answer(chat("Only one sentence here", system="Summarize it")).splitlines()
                if b.startswith("- ")
            ]
        )
        == 2
    )


@pytest.mark.parametrize(
    "answer_text, reference, score",
    [("the cat sat on the mat", "the cat sat on the mat", 5), ("bananas are yellow", "the cat sat on the mat", 1)],
)
def test_judge_scores_word_overlap(answer_text, reference, score):
    """A judge prompt gets {"score", "rationale"}: identical answers score 5, unrelated ones 1."""
    body = chat(
        f"Question: where?\nAnswer: {answer_text}\nReference: {reference}", system="You are a judge. Give a score."
    )
    verdict = orjson.loads(answer(body))
    assert verdict["score"] == score and isinstance(verdict["rationale"], str) and "\n" not in verdict["rationale"]


def _validates(value, schema):
    """A small JSON-schema check covering what the emulator promises."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return (
            isinstance(value, dict)
            and all(k in value for k in schema.get("required", []))
            and all(_validates(value[k], s) for k, s in props.items() if k in value)
        )
    if kind == "array":
        return (
            isinstance(value, list)
            and len(value) >= schema.get("minItems", 0)
            and all(_validates(v, schema["items"]) for v in value)
        )
    if kind == "string":
        return (
            isinstance(value, str)
            and len(value) >= schema.get("minLength", 0)
            and len(value) <= schema.get("maxLength", 10**9)
        )
    if kind == "integer":
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and schema.get("minimum", -math.inf) <= value <= schema.get("maximum", math.inf)
        )
    if kind == "number":
        return isinstance(value, (int, float)) and schema.get("minimum", -math.inf) <= value <= schema.get(
            "maximum", math.inf
        )
    if kind == "boolean":
        return isinstance(value, bool)
    return False


def test_json_schema_response_format_gets_matching_json():
    """response_format json_schema yields JSON valid against the schema, enums chosen like labels."""
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["billing", "shipping"]},
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 2},
            "urgent": {"type": "boolean"},
            "code": {"type": "string", "minLength": 12},
            "nested": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 10}}, "required": ["n"]},
        },
        "required": ["label", "score", "tags"],
    }
    body = chat(
        "the shipping box is crushed",
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    value = orjson.loads(answer(body))
    assert _validates(value, schema) and value["label"] == "shipping"


def test_embeddings_are_unit_vectors_closer_when_words_are_shared():
    """Vectors are unit length; texts sharing words are closer than unrelated texts."""
    a, b, c = (embed(t, 256) for t in ("the red apple pie", "a red apple tart", "quantum tax law"))
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-9)
    dot = lambda u, v: sum(x * y for x, y in zip(u, v))  # noqa: E731
    assert dot(a, b) > dot(a, c)
    assert embed("the red apple pie", 256) == a


@pytest.mark.parametrize(
    "body",
    [
        chat("hi"),
        chat("x " * 3000, system="s " * 2000),
        {"system": "sys", "messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]}]},
    ],
)
def test_prompt_tokens_match_the_shared_tokenizer(body):
    """Emulator prompt counts equal batch_pipelines.core.tokens.count_chat_prompt."""
    expected = tokens.count_chat_prompt(body)
    assert accounting.prompt_tokens(body) == expected
    assert accounting.PromptCache().measure(body)[0] == expected


def test_cached_tokens_follow_the_1024_plus_128_rule():
    """Short prompts never cache; a repeated long prefix caches a multiple of 128 from 1,024."""
    cache = accounting.PromptCache()
    short = chat("hello", system="short")
    assert cache.measure(short) == (cache.measure(short)[0], 0)
    long_system = "alpha beta " * 800
    first = cache.measure(chat("one", system=long_system))
    second = cache.measure(chat("two", system=long_system))
    assert first[1] == 0 and second[1] >= 1024 and (second[1] - 1024) % 128 == 0 and second[1] <= second[0]
    assert cache.measure(chat("one", system="other " + long_system))[1] == 0


def test_profile_rejects_unknown_keys_and_bad_values():
    """Profiles name the offending key: unknown keys, out-of-range rates, unknown error kinds."""
    for raw in (
        {"typo_rate": 1},
        {"item_error_rate": 2},
        {"item_error_kinds": {"teapot_418": 1}},
        {"batch_completion_seconds": {"min": 5, "max": 1}},
        {"batch_completion_seconds": {"median": 3600}},
        {"batch_completion_seconds": {"median": 3600, "p95": 1800}},
        {"batch_completion_seconds": {"median": 0, "p95": 1800}},
        {"batch_completion_seconds": {"median": 60, "p95": 600, "mean": 100}},
        {"sync_429_rate": 1.5},
        {"never_complete": "yes"},
    ):
        with pytest.raises(ConfigError):
            Profile.from_mapping(raw)


def test_bundled_profiles_load_and_round_trip():
    """default, demo, faulty and realistic load; a profile's to_dict loads back to the same profile."""
    assert {"default", "demo", "faulty", "realistic"} <= set(bundled_profiles())
    for name in bundled_profiles():
        profile = load_profile(name)
        assert Profile.from_mapping(profile.to_dict()) == profile
    assert load_profile("demo").batch_completion_seconds.max < load_profile("default").batch_completion_seconds.min


def test_lognormal_batch_completion_has_its_median_and_p95_and_stays_in_the_window():
    """A {median, p95} span draws a lognormal: half the draws under the median, 95% under p95, none past max."""
    span = Profile.from_mapping({"batch_completion_seconds": {"median": 3600, "p95": 21600}}).batch_completion_seconds
    assert (span.min, span.max) == (0.0, 86_400.0)
    draws = sorted(span.draw((i + 0.5) / 10_000) for i in range(10_000))
    assert draws[4_999] < 3600 < draws[5_000]
    assert draws[9_499] < 21600 < draws[9_500]
    assert draws[-1] == 86_400.0  # the far tail is capped at the 24 h window
    uniform = Profile.from_mapping({"batch_completion_seconds": {"min": 10, "max": 20}}).batch_completion_seconds
    assert uniform.draw(0.5) == 15.0


def test_realistic_profile_is_the_reference_days_provider():
    """The bundled realistic profile: median 1 h, p95 6 h, 1% expiring half-done, 1% item errors, some 429s."""
    profile = load_profile("realistic")
    span = profile.batch_completion_seconds
    assert (span.median, span.p95, span.max) == (3600.0, 21600.0, 86400.0)
    assert (profile.expire_rate, profile.unfinished_at_expiry, profile.item_error_rate) == (0.01, 0.5, 0.01)
    assert len(profile.item_error_kinds) == 3
    assert 0 < profile.sync_429_rate < 0.1 and profile.retry_after_seconds > 0


def test_clock_scale_advance_and_resume():
    """The clock runs at time_scale, jumps on advance, never goes back, and resumes scaled downtime."""
    real = [100.0]
    clock = VirtualClock(1_000.0, 2.0, real_clock=lambda: real[0])
    real[0] += 5
    assert clock.now() == 1_010.0
    assert clock.advance(30) == 1_040.0
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert resume_virtual_time(500.0, 10.0, 20.0, 0.0) == 500.0
    assert resume_virtual_time(500.0, 10.0, 20.0, 1.0) == 510.0
