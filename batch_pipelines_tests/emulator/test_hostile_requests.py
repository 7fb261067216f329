"""Hostile numbers: every numeric field the emulator acts on is bounded, refused with the vendor's 400."""

from __future__ import annotations

import httpx
import pytest

from batch_pipelines.core.errors import ConfigError
from batch_pipelines.emulator.profile import Profile

OPENAI = {"Authorization": "Bearer k"}
ANTHROPIC = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
HUGE = 1_000_000_000


def chat(**fields) -> dict:
    return {"model": "gpt-5.4", "messages": [{"role": "user", "content": "hello"}], **fields}


def test_a_billion_choices_is_refused_at_once_and_the_emulator_stays_up(emulator):
    """n = 1e9 gets OpenAI's 400 (at most 128) within the timeout, and health still answers afterwards."""
    response = httpx.post(f"{emulator.openai_base_url}/chat/completions", headers=OPENAI, json=chat(n=HUGE), timeout=5)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "n" and "128" in error["message"] and error["type"] == "invalid_request_error"
    assert httpx.get(f"{emulator.base_url}/_emulator/health", timeout=5).status_code == 200


def test_n_up_to_the_vendor_limit_is_served(emulator):
    """n = 128, the vendor's maximum, is answered with 128 choices."""
    response = httpx.post(f"{emulator.openai_base_url}/chat/completions", headers=OPENAI, json=chat(n=128))
    assert response.status_code == 200 and len(response.json()["choices"]) == 128


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_an_output_cap_no_model_allows_is_refused(emulator, field):
    """max_tokens / max_completion_tokens above 128,000 is a 400 naming the field (OpenAI surface)."""
    response = httpx.post(f"{emulator.openai_base_url}/chat/completions", headers=OPENAI, json=chat(**{field: HUGE}))
    assert response.status_code == 400 and response.json()["error"]["param"] == field


def test_anthropic_max_tokens_above_the_ceiling_is_refused(emulator):
    """Anthropic's max_tokens above 128,000 is an invalid_request_error, in Anthropic's error shape."""
    body = {"model": "claude-sonnet-4.6", "max_tokens": HUGE, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{emulator.base_url}/v1/messages", headers=ANTHROPIC, json=body)
    assert response.status_code == 400
    assert (
        response.json()["error"]["type"] == "invalid_request_error"
        and "max_tokens" in response.json()["error"]["message"]
    )


def test_an_embedding_input_over_8192_tokens_is_refused(emulator):
    """One input of 200,000 token ids is a 400 (the vendor's per-input context), not a vector."""
    body = {"model": "text-embedding-3-small", "input": [[1] * 200_000]}
    response = httpx.post(f"{emulator.openai_base_url}/embeddings", headers=OPENAI, json=body)
    assert response.status_code == 400 and "8192" in response.json()["error"]["message"]


def test_an_embeddings_request_over_300k_tokens_is_refused(emulator):
    """Inputs that are each allowed but sum past 300,000 tokens are refused per request."""
    body = {"model": "text-embedding-3-small", "input": [[1] * 8000] * 40}
    response = httpx.post(f"{emulator.openai_base_url}/embeddings", headers=OPENAI, json=body)
    assert response.status_code == 400 and "300000" in response.json()["error"]["message"]


def test_a_clock_jump_beyond_ten_years_is_refused_and_time_does_not_move(emulator):
    """POST /_emulator/clock/advance with 1e15 s is a 400; the clock stays representable."""
    before = emulator.now()
    response = httpx.post(f"{emulator.base_url}/_emulator/clock/advance", json={"seconds": 1e15})
    assert response.status_code == 400
    assert emulator.now() == pytest.approx(before)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_profile_number_that_is_not_finite_is_refused(value):
    """A profile (YAML reads .nan and .inf) with NaN or infinite seconds or rates is refused, naming the key."""
    for key in ("batch_completion_seconds", "item_error_rate"):
        with pytest.raises(ConfigError, match=key):
            Profile.from_mapping({key: value})


def test_a_profile_file_that_is_not_a_small_text_file_is_refused(tmp_path):
    """A 2 MB or a non-UTF-8 --profile file is a ConfigError naming the problem, not a hang or a traceback."""
    from batch_pipelines.emulator.profile import load_profile

    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * 2_000_000)
    with pytest.raises(ConfigError, match="larger than"):
        load_profile(huge)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"seed: \xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_profile(binary)
