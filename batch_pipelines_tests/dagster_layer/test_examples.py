"""The files the README tells users to copy work as written."""

from pathlib import Path

import dagster as dg

from batch_pipelines.dagster_layer.resources import BatchGatewayResource
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
    monkeypatch.setenv("AGGREGATOR_API_KEY", "sk-test")
    assert routes["deepseek-v3.2"].resolve_api_key() == "sk-test"


def test_resource_keys_come_from_env_vars_and_never_show(monkeypatch, tmp_path):
    """Keys given with dagster.EnvVar reach their own provider only, and stay out of reprs."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-SECRET")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-SECRET")
    resource = BatchGatewayResource(
        providers_file=str(ROOT / "examples" / "providers.yaml"),
        openai_api_key=dg.EnvVar("OPENAI_API_KEY"),
        anthropic_api_key=dg.EnvVar("ANTHROPIC_API_KEY"),
        ledger_url=f"sqlite:///{tmp_path / 'l.sqlite'}",
        results_dir=str(tmp_path / "r"),
        work_dir=str(tmp_path / "w"),
    )
    with dg.build_resources({"batch_gateway": resource}) as resources:  # resolves EnvVar as a run does
        gateway = resources.batch_gateway.gateway
        openai = gateway.registry.get("openai")
        assert openai.resolve_api_key() == "sk-openai-SECRET"
        assert gateway.registry.get("anthropic").resolve_api_key() == "sk-ant-SECRET"
        # Same protocol, other vendors: they keep their own variables, never the OpenAI key.
        assert gateway.registry.get("deepseek-via-aggregator").api_key is None
        assert gateway.registry.get("gemini").api_key is None
        assert "SECRET" not in repr(openai) and "SECRET" not in str(gateway.registry.providers)


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
