"""A provider's key has one way in: the environment variable named after the provider, or the one it names."""

import pytest

from batch_pipelines.core.errors import ConfigError
from batch_pipelines.providers.config import ProviderRegistry, key_env_for

SECRET = "sk-test-SECRET-0123456789"


@pytest.mark.parametrize(
    ("name", "variable"),
    [
        ("openai", "OPENAI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),
        ("gemini", "GEMINI_API_KEY"),
        ("my-vllm", "MY_VLLM_API_KEY"),
        ("deepseek.via aggregator", "DEEPSEEK_VIA_AGGREGATOR_API_KEY"),
        ("9router", "_9ROUTER_API_KEY"),
    ],
)
def test_key_variable_is_named_after_the_provider(name, variable):
    """Capitals, anything but a letter or digit becomes '_', then _API_KEY; always a valid variable name."""
    assert key_env_for(name) == variable
    spec = {"protocol": "openai", "base_url": "http://x/v1", "models": ["m"]}
    assert ProviderRegistry.from_mapping({"providers": {name: spec}}).get(name).api_key_env == variable


def test_api_key_env_names_another_variable(monkeypatch):
    """api_key_env overrides the naming rule; the provider then reads only that variable."""
    spec = {"protocol": "openai", "base_url": "http://x/v1", "api_key_env": "VLLM_KEY", "models": ["m"]}
    provider = ProviderRegistry.from_mapping({"providers": {"my-vllm": spec}}).get("my-vllm")
    monkeypatch.setenv("MY_VLLM_API_KEY", "not this one")
    monkeypatch.setenv("VLLM_KEY", SECRET)
    assert provider.resolve_api_key() == SECRET


def test_missing_key_names_provider_and_variable_not_a_value(monkeypatch):
    """A provider whose variable is unset fails naming the provider and the variable; other keys never leak in."""
    registry = ProviderRegistry.from_mapping({"providers": {"openai": {"models": ["gpt-*"]}, "gemini": {"models": []}}})
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    assert registry.get("openai").resolve_api_key() == SECRET
    with pytest.raises(ConfigError) as raised:
        registry.get("gemini").resolve_api_key()
    assert "'gemini'" in raised.value.message and "GEMINI_API_KEY" in raised.value.message
    assert raised.value.details["provider"] == "gemini"
    assert SECRET not in raised.value.message and SECRET not in str(raised.value.details)
