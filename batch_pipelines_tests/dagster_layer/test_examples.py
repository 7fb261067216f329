"""The files the README tells users to copy work as written."""

from pathlib import Path

import dagster as dg
import pytest

from batch_pipelines import BatchGatewayResource, ConfigError
from batch_pipelines.providers.config import ProviderRegistry

ROOT = Path(__file__).resolve().parents[2]


def test_example_provider_registry_routes_every_family(monkeypatch):
    """examples/providers.yaml routes each model family to its vendor, keys read from the named variables."""
    registry = ProviderRegistry.from_yaml(ROOT / "examples" / "providers.yaml")
    routes = {
        m: registry.provider_for(m) for m in ("gpt-5.4-mini", "claude-sonnet-4.6", "gemini-3-flash", "deepseek-v3.2")
    }
    assert {m: p.name for m, p in routes.items()} == {
        "gpt-5.4-mini": "openai",
        "claude-sonnet-4.6": "anthropic",
        "gemini-3-flash": "gemini",
        "deepseek-v3.2": "deepseek-via-aggregator",
    }
    assert routes["claude-sonnet-4.6"].protocol == "anthropic"
    assert (routes["gemini-3-flash"].protocol, routes["gemini-3-flash"].api_key_env) == ("gemini", "GEMINI_API_KEY")
    monkeypatch.setenv("AGGREGATOR_API_KEY", "sk-test")
    assert routes["deepseek-v3.2"].resolve_api_key() == "sk-test"


def test_resource_keys_come_from_each_providers_variable_and_never_show(monkeypatch, tmp_path):
    """Each provider of examples/providers.yaml reads its own variable only, and keys stay out of reprs."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-SECRET")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-SECRET")
    monkeypatch.setenv("AGGREGATOR_API_KEY", "sk-agg-SECRET")
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    resource = BatchGatewayResource(
        providers_file=str(ROOT / "examples" / "providers.yaml"),
        ledger_url=f"sqlite:///{tmp_path / 'l.sqlite'}",
        results_dir=str(tmp_path / "r"),
        work_dir=str(tmp_path / "w"),
    )
    with dg.build_resources({"batch_gateway": resource}) as resources:
        registry = resources.batch_gateway.gateway.registry
        assert registry.get("openai").resolve_api_key() == "sk-openai-SECRET"
        assert registry.get("anthropic").resolve_api_key() == "sk-ant-SECRET"
        # Same protocol, other vendors: their own variables, never the OpenAI key.
        assert registry.get("deepseek-via-aggregator").resolve_api_key() == "sk-agg-SECRET"
        with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
            registry.get("gemini").resolve_api_key()
        assert all(provider.api_key is None for provider in registry.providers)
        assert "SECRET" not in str(registry.providers)


def test_readme_workload_example_loads():
    """The README's "Add your own workload" code runs as written and yields loadable definitions."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Add your own workload") :]
    code = section[section.index("```python") + len("```python") : section.index("```", section.index("```python") + 9)]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    repo = namespace["defs"].get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"reviews", "review_sentiment_batch", "review_sentiment_results"} <= keys
    assert repo.get_sensor_def("review_sentiment_completion_sensor")
    assert repo.get_sensor_def("review_sentiment_deadline_sensor")


def test_readme_extra_headers_example_loads_and_sends_its_headers(monkeypatch):
    """The README's extra_headers provider is a valid registry whose headers ride beside the auth header."""
    import yaml

    from batch_pipelines.providers.http import auth_headers

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```yaml", text.index("`extra_headers`: headers sent with every request"))
    block = text[start + len("```yaml") : text.index("```", start + 7)]
    registry = ProviderRegistry.from_mapping(yaml.safe_load(block))
    monkeypatch.setenv("ROUTER_API_KEY", "sk-test")
    headers = auth_headers(registry.provider_for("deepseek-v3.2"))
    assert headers["X-Title"] == "nightly batch" and headers["Authorization"] == "Bearer sk-test"
