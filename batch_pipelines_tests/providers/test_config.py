"""The provider registry: routing models to providers, vendor defaults, keys from the environment."""

from __future__ import annotations

import pytest

from batch_pipelines.core.errors import ConfigError, UnknownModelError
from batch_pipelines.providers.config import BatchCaps, ProviderConfig, ProviderRegistry, parse_byte_size

SECRET = "sk-live-VERY-SECRET-value"


def registry(**providers) -> ProviderRegistry:
    return ProviderRegistry.from_mapping({"providers": providers})


def test_emulator_registry_routes_claude_to_anthropic_and_everything_else_to_openai():
    """for_emulator serves claude-* over the Anthropic protocol and any other model over OpenAI's."""
    reg = ProviderRegistry.for_emulator("http://127.0.0.1:8000/", api_key="k")
    openai, anthropic = reg.provider_for("gpt-4o-mini"), reg.provider_for("claude-sonnet-4-5")
    assert (openai.protocol, openai.base_url) == ("openai", "http://127.0.0.1:8000/v1")
    assert (anthropic.protocol, anthropic.base_url) == ("anthropic", "http://127.0.0.1:8000")
    assert reg.provider_for("text-embedding-3-small") is openai
    assert openai.resolve_api_key() == anthropic.resolve_api_key() == "k"


def test_switching_from_emulator_to_vendors_is_a_config_change(monkeypatch):
    """The same model routes to the real vendor with its documented URL, key variable and caps."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    reg = registry(openai={"models": ["gpt-4o-mini"]}, anthropic={"models": ["claude-*"]})
    openai = reg.provider_for("gpt-4o-mini")
    assert (openai.base_url, openai.api_key_env) == ("https://api.openai.com/v1", "OPENAI_API_KEY")
    assert openai.caps == BatchCaps(max_requests=50_000, max_bytes=200_000_000, max_embedding_inputs=50_000)
    anthropic = reg.provider_for("claude-haiku-4-5")
    assert (anthropic.base_url, anthropic.api_key_env) == ("https://api.anthropic.com", "ANTHROPIC_API_KEY")
    assert (anthropic.caps.max_requests, anthropic.caps.max_bytes) == (100_000, 256_000_000)
    assert openai.resolve_api_key() == SECRET


def test_openai_compatible_providers_by_base_url():
    """Gemini, vLLM and aggregators are OpenAI-protocol providers that differ only by URL and key."""
    reg = registry(
        gemini={"models": ["gemini-*"]},
        vllm={
            "protocol": "openai",
            "base_url": "http://gpu-box:8000/v1",
            "api_key_env": "VLLM_KEY",
            "models": ["llama-*"],
        },
        router={
            "protocol": "openai",
            "base_url": "https://router.example/api/v1",
            "api_key_env": "ROUTER_KEY",
            "models": ["mistral-large"],
        },
    )
    assert reg.provider_for("gemini-2.5-flash").base_url == "https://generativelanguage.googleapis.com/v1beta/openai"
    assert reg.provider_for("llama-3.1-8b").name == "vllm"
    assert reg.provider_for("mistral-large").name == "router"


def test_exact_names_beat_patterns_and_specific_patterns_beat_general_ones():
    """An exact model name wins over any pattern; 'claude-*' wins over '*'."""
    reg = registry(
        catchall={"protocol": "openai", "base_url": "http://a/v1", "api_key_env": "A", "models": ["*"]},
        claude={"protocol": "anthropic", "base_url": "http://b", "api_key_env": "B", "models": ["claude-*"]},
        special={"protocol": "anthropic", "base_url": "http://c", "api_key_env": "C", "models": ["claude-special"]},
    )
    assert reg.provider_for("gpt-5").name == "catchall"
    assert reg.provider_for("claude-opus-4").name == "claude"
    assert reg.provider_for("claude-special").name == "special"


def test_unknown_model_lists_the_known_ones():
    """A model no provider serves raises UnknownModelError naming the models that are known."""
    reg = registry(openai={"models": ["gpt-4o", "gpt-4o-mini"]})
    with pytest.raises(UnknownModelError, match="gpt-4o, gpt-4o-mini") as caught:
        reg.provider_for("gpt-9")
    assert caught.value.details["model"] == "gpt-9"


def test_a_model_listed_by_two_providers_is_refused():
    """Two providers claiming the same exact model is ambiguous, so the registry refuses it."""
    with pytest.raises(ConfigError, match="'gpt-4o' is listed by both 'openai' and 'gemini'"):
        registry(openai={"models": ["gpt-4o"]}, gemini={"models": ["gpt-4o"]})


def test_a_provider_configured_twice_is_refused():
    """Provider names are unique."""
    spec = {"name": "openai", "models": ["a"], "protocol": "openai", "base_url": "http://x/v1", "api_key_env": "K"}
    with pytest.raises(ConfigError, match="configured twice"):
        ProviderRegistry.from_mapping({"providers": [spec, {**spec, "models": ["b"]}]})


def test_misconfiguration_names_the_provider_and_each_field():
    """A bad provider entry is a ConfigError naming the provider and every broken field."""
    with pytest.raises(ConfigError) as caught:
        registry(local={"protocol": "grpc", "base_url": "localhost:8000", "api_key_env": "K", "models": ["m"]})
    message = caught.value.message
    assert "provider 'local'" in message and "protocol" in message and "base_url" in message


def test_a_key_pasted_as_the_variable_name_is_refused_without_echoing_it():
    """api_key_env holding a key (not a variable name) is rejected, and the error does not repeat it."""
    with pytest.raises(ConfigError) as caught:
        registry(openai={"models": ["m"], "api_key_env": SECRET})
    assert "api_key_env" in caught.value.message
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.details)


def test_missing_key_names_the_variable(monkeypatch):
    """resolve_api_key reads the environment at call time; a missing key names the variable."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    provider = registry(openai={"models": ["m"]}).get("openai")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        provider.resolve_api_key()
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert provider.resolve_api_key() == SECRET


def test_explicit_keys_never_show_in_repr_or_dumps():
    """An explicit api_key is a secret: repr, str and the JSON dump hide it."""
    provider = ProviderConfig(
        name="p", protocol="openai", base_url="http://x/v1", api_key_env="K", api_key=SECRET, models=["m"]
    )
    assert SECRET not in repr(provider) and SECRET not in str(provider)
    assert SECRET not in provider.model_dump_json()
    assert provider.resolve_api_key() == SECRET


def test_caps_and_limits_accept_human_quantities():
    """'100MB', '30M' and '500k' are read as bytes and token counts."""
    reg = registry(
        openai={
            "models": ["gpt-4o-mini"],
            "caps": {"max_bytes": "100MB", "enqueued_token_budget": {"gpt-4o-mini": "30M"}},
            "rate_limits": {"requests_per_minute": "5k", "tokens_per_minute": "2M", "max_concurrency": 32},
            "timeouts": {"read": 30},
        }
    )
    provider = reg.get("openai")
    assert provider.caps.max_bytes == 100_000_000
    assert provider.caps.token_budget_for("gpt-4o-mini") == 30_000_000
    assert provider.caps.token_budget_for("other") is None
    assert (provider.rate_limits.requests_per_minute, provider.rate_limits.tokens_per_minute) == (5_000, 2_000_000)
    assert provider.timeouts.read == 30 and provider.timeouts.connect == 10


@pytest.mark.parametrize(
    ("text", "size"), [(1234, 1234), ("200MB", 200_000_000), ("256 MiB", 256 * 2**20), ("1.5 GB", 1_500_000_000)]
)
def test_parse_byte_size(text, size):
    """Byte sizes accept plain integers and decimal or binary units."""
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("bad", ["lots", "12 parsecs", True])
def test_parse_byte_size_refuses_nonsense(bad):
    """Anything that is not a size is refused with the offending value named."""
    with pytest.raises(ValueError, match="byte size"):
        parse_byte_size(bad)


def test_negative_or_zero_caps_are_refused():
    """A zero request cap or a non-positive token budget is a configuration error."""
    with pytest.raises(ConfigError, match="max_requests"):
        registry(openai={"models": ["m"], "caps": {"max_requests": 0}})
    with pytest.raises(ConfigError, match="enqueued_token_budget"):
        registry(openai={"models": ["m"], "caps": {"enqueued_token_budget": {"m": 0}}})


def test_from_yaml(tmp_path, monkeypatch):
    """A YAML file with the same shape as from_mapping builds the same registry."""
    path = tmp_path / "providers.yaml"
    path.write_text(
        "providers:\n"
        "  openai:\n"
        "    models: [gpt-4o-mini, text-embedding-3-small]\n"
        "    caps: {enqueued_token_budget: {gpt-4o-mini: 2M}}\n"
        "  anthropic:\n"
        "    models: ['claude-*']\n"
    )
    reg = ProviderRegistry.from_yaml(path)
    assert reg.provider_for("text-embedding-3-small").name == "openai"
    assert reg.provider_for("claude-opus-4-1").name == "anthropic"
    assert reg.get("openai").caps.token_budget_for("gpt-4o-mini") == 2_000_000


def test_from_yaml_reports_unreadable_files(tmp_path):
    """A missing file or broken YAML is a ConfigError naming the path."""
    with pytest.raises(ConfigError, match="cannot read"):
        ProviderRegistry.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ProviderRegistry.from_yaml(bad)


def test_empty_or_shapeless_config_is_refused():
    """No providers, or no 'providers' key, is a ConfigError."""
    with pytest.raises(ConfigError, match="'providers'"):
        ProviderRegistry.from_mapping({})
    with pytest.raises(ConfigError, match="empty"):
        ProviderRegistry.from_mapping({"providers": {}})


def test_unknown_provider_name_lists_the_configured_ones():
    """get() on a provider that is not configured names those that are."""
    with pytest.raises(ConfigError, match="configured providers are openai"):
        registry(openai={"models": ["m"]}).get("azure")


def test_a_yaml_error_on_a_key_line_never_echoes_the_key(tmp_path):
    """An unterminated quote on an api_key line: the error names line and column, never the line's text."""
    path = tmp_path / "providers.yaml"
    path.write_text(f'providers:\n  openai:\n    models: ["gpt-*"]\n    api_key: "{SECRET}\n')
    with pytest.raises(ConfigError) as caught:
        ProviderRegistry.from_yaml(path)
    assert "not valid YAML" in caught.value.message and "line 4" in caught.value.message
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.details)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_a_literal_api_key_in_the_provider_file_is_refused_without_echoing_it(tmp_path):
    """Keys never live in providers.yaml: an api_key there is refused, pointing to api_key_env, not repeated."""
    path = tmp_path / "providers.yaml"
    path.write_text(f'providers:\n  openai:\n    models: ["gpt-*"]\n    api_key: "{SECRET}"\n')
    with pytest.raises(ConfigError, match="api_key_env") as caught:
        ProviderRegistry.from_yaml(path)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.details)


@pytest.mark.parametrize(
    "spec",
    [
        {"base_url": f"https://user:{SECRET}@gateway.test/v1"},
        {"extra_headers": {"Authorization": f"Bearer {SECRET}"}},
        {"extra_headers": {"x-api-key": SECRET}},
    ],
)
def test_credentials_in_a_url_or_extra_headers_are_refused_without_echoing_them(spec):
    """A password in base_url or an auth header in extra_headers is refused; the error does not repeat it."""
    with pytest.raises(ConfigError) as caught:
        registry(gw={"protocol": "openai", "base_url": "https://gateway.test/v1", "api_key_env": "K", **spec})
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.details)


def test_extra_headers_reach_every_request_beside_the_auth_header():
    """extra_headers (e.g. an aggregator's attribution headers) are sent with the provider's own auth."""
    from batch_pipelines.providers.http import auth_headers

    provider = ProviderConfig(
        name="gw",
        protocol="openai",
        base_url="https://gateway.test/v1",
        api_key_env="K",
        api_key="sk-x",
        extra_headers={"HTTP-Referer": "https://example.com", "X-Title": "batch"},
    )
    headers = auth_headers(provider)
    assert headers["Authorization"] == "Bearer sk-x" and headers["X-Title"] == "batch"


def test_the_same_pattern_under_two_providers_is_refused():
    """'gpt-*' listed by two providers would route by configuration order: refused, naming both."""
    with pytest.raises(ConfigError, match="'gpt-\\*' is listed by both 'openai' and 'aggregator'"):
        registry(
            openai={"models": ["gpt-*"]},
            aggregator={
                "protocol": "openai",
                "base_url": "https://agg.test/v1",
                "api_key_env": "A",
                "models": ["gpt-*"],
            },
        )


def test_equally_specific_patterns_that_both_match_are_refused_for_that_model():
    """'gpt-*' and '*-mini' both fit 'gpt-5-mini' equally well: routing it is refused, naming both providers."""
    reg = registry(
        openai={"models": ["gpt-*"]},
        minis={"protocol": "openai", "base_url": "https://m.test/v1", "api_key_env": "M", "models": ["*mini"]},
    )
    assert reg.provider_for("gpt-5").name == "openai"
    with pytest.raises(ConfigError, match="'openai'.*'minis'|'minis'.*'openai'"):
        reg.provider_for("gpt-mini")


def test_a_huge_or_binary_provider_file_is_refused_promptly(tmp_path):
    """/dev/zero and a non-UTF-8 file are ConfigErrors naming the problem, not a hang or a UnicodeDecodeError."""
    with pytest.raises(ConfigError, match="larger than"):
        ProviderRegistry.from_yaml("/dev/zero")
    binary = tmp_path / "providers.yaml"
    binary.write_bytes(b"\xff\xfe\x00providers")
    with pytest.raises(ConfigError, match="not UTF-8"):
        ProviderRegistry.from_yaml(binary)
