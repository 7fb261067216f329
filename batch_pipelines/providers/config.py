"""The provider registry: which provider serves a model, where it lives, and its limits.

Switching a workload from the emulator to a real vendor is a change here and nowhere else:
every provider is a wire protocol (``openai``, ``anthropic`` or ``gemini``), a base URL, the *name* of the
environment variable holding its key, its batch caps, its rate limits and its timeouts.

Base URLs follow the official SDKs: an OpenAI-compatible base URL ends in ``/v1``
(``https://api.openai.com/v1``, ``http://localhost:8000/v1`` for vLLM,
``https://generativelanguage.googleapis.com/v1beta/openai`` for Gemini), while Anthropic's is
the bare host (``https://api.anthropic.com``), and so is Gemini's native API's
(``https://generativelanguage.googleapis.com``: its paths start ``/v1beta`` and, for uploads,
``/upload/v1beta``).

A model entry is an exact name or a shell-style pattern (``claude-*``, ``*``). An exact name
wins over any pattern; among patterns the most specific (most literal characters) wins.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from batch_pipelines.core.config_files import load_yaml_file
from batch_pipelines.core.errors import ConfigError, UnknownModelError
from batch_pipelines.core.quantities import parse_token_count

Protocol = Literal["openai", "anthropic", "gemini"]

# Vendor defaults (PROVIDERS.md). Decimal megabytes: the smaller reading of "200 MB" is the safe one.
OPENAI_MAX_REQUESTS = 50_000
OPENAI_MAX_BYTES = 200_000_000
OPENAI_MAX_EMBEDDING_INPUTS = 50_000
ANTHROPIC_MAX_REQUESTS = 100_000
ANTHROPIC_MAX_BYTES = 256_000_000
# Gemini: an input file holds up to 2 GB; Google documents no request count per batch, so we
# keep OpenAI's 50,000 (a batch's results are one file we stream, and shards stay comparable).
GEMINI_MAX_REQUESTS = 50_000
GEMINI_MAX_BYTES = 2_000_000_000
GEMINI_NATIVE_BASE_URL = "https://generativelanguage.googleapis.com"

_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1_000,
    "mb": 1_000_000,
    "gb": 1_000_000_000,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_byte_size(value: Any) -> int:
    """200_000_000, '200MB', '256 MiB' -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a byte size")
    if isinstance(value, int):
        return value
    match = _BYTES.match(str(value).replace("_", ""))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _BYTE_UNITS:
        raise ValueError(f"{value!r} is not a byte size (a number, optionally with kB, MB, GB, KiB, MiB, GiB)")
    return int(float(match.group(1)) * _BYTE_UNITS[unit])


# Header names that carry a credential: never taken from extra_headers.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie", "proxy-authorization"}
)


def _token_count(value: Any) -> Any:
    return parse_token_count(value) if isinstance(value, str) else value


def key_env_for(provider_name: str) -> str:
    """The environment variable a provider's key is read from unless ``api_key_env`` names another.

    ``openai`` -> ``OPENAI_API_KEY``, ``my-vllm`` -> ``MY_VLLM_API_KEY``: capitals, anything but a
    letter or digit becomes ``_``.
    """
    stem = re.sub(r"[^A-Za-z0-9]+", "_", provider_name).strip("_").upper() or "PROVIDER"
    return f"{'_' + stem if stem[0].isdigit() else stem}_API_KEY"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchCaps(_Model):
    """What one provider batch may hold; the sharder splits work to stay under every cap."""

    max_requests: int = Field(default=OPENAI_MAX_REQUESTS, gt=0)
    """Requests per batch (OpenAI 50,000; Anthropic 100,000)."""
    max_bytes: int = Field(default=OPENAI_MAX_BYTES, gt=0)
    """Bytes of the batch input (OpenAI 200 MB; Anthropic 256 MB); accepts '200MB'."""
    max_embedding_inputs: int | None = Field(default=OPENAI_MAX_EMBEDDING_INPUTS, gt=0)
    """Embedding inputs summed over a batch's requests (OpenAI 50,000); None where unlimited."""
    enqueued_token_budget: dict[str, int] | None = None
    """Per model: the organisation's enqueued-token limit for batches ('30M' accepted)."""

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> Any:
        return parse_byte_size(value)

    @field_validator("max_requests", "max_embedding_inputs", mode="before")
    @classmethod
    def _counts(cls, value: Any) -> Any:
        return _token_count(value)

    @field_validator("enqueued_token_budget", mode="before")
    @classmethod
    def _budgets(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(model): _token_count(tokens) for model, tokens in value.items()}
        return value

    @field_validator("enqueued_token_budget")
    @classmethod
    def _positive_budgets(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        for model, tokens in (value or {}).items():
            if tokens <= 0:
                raise ValueError(f"enqueued_token_budget for {model!r} must be positive, got {tokens}")
        return value

    @classmethod
    def defaults_for(cls, protocol: Protocol) -> BatchCaps:
        if protocol == "anthropic":
            # Anthropic has no embeddings endpoint, so no embedding-input cap applies.
            return cls(max_requests=ANTHROPIC_MAX_REQUESTS, max_bytes=ANTHROPIC_MAX_BYTES, max_embedding_inputs=None)
        if protocol == "gemini":
            # One input per embedding line: the request cap already bounds the inputs.
            return cls(max_requests=GEMINI_MAX_REQUESTS, max_bytes=GEMINI_MAX_BYTES, max_embedding_inputs=None)
        return cls()

    def token_budget_for(self, model: str) -> int | None:
        return (self.enqueued_token_budget or {}).get(model)


class RateLimits(_Model):
    """Client-side limits for the sync lane, applied per provider *and* model.

    ``None`` means "not configured": the limiter then learns the limit from the vendor's
    ``x-ratelimit-limit-*`` headers and obeys ``x-ratelimit-remaining-*``/``Retry-After``.
    """

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    max_concurrency: int = Field(default=64, gt=0)
    """Connections (and so in-flight sync calls) to this provider at once."""
    burst_seconds: float = Field(default=10.0, gt=0)
    """How many seconds' worth of the per-minute budget may be spent at once. Vendors enforce
    per-minute limits over shorter windows, so a whole minute's burst would trip them."""

    @field_validator("requests_per_minute", "tokens_per_minute", mode="before")
    @classmethod
    def _counts(cls, value: Any) -> Any:
        return _token_count(value)


class Timeouts(_Model):
    """Seconds, per phase of an HTTP call (httpx's four timeouts)."""

    connect: float = Field(default=10.0, gt=0)
    read: float = Field(default=600.0, gt=0)
    write: float = Field(default=600.0, gt=0)
    pool: float = Field(default=30.0, gt=0)


class ProviderConfig(_Model):
    """One provider: a wire protocol at a base URL, with its key's env var, caps and limits."""

    name: str = Field(min_length=1)
    protocol: Protocol
    base_url: str
    api_key_env: str = Field(min_length=1)
    """Name of the environment variable holding the key, read when a client is built. The one way a
    key comes in; default: the provider's name in capitals plus ``_API_KEY`` (``key_env_for``)."""
    api_key: SecretStr | None = Field(default=None, repr=False)
    """An explicit key (the emulator's, or one a resource already resolved); never logged."""
    models: list[str] = Field(default_factory=list)
    """Exact model names or shell patterns (``claude-*``; ``*`` for any model)."""
    caps: BatchCaps
    """Defaults to the vendor's documented caps for the protocol."""
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    model_rate_limits: dict[str, RateLimits] = Field(default_factory=dict)
    """Per-model overrides of ``rate_limits`` (vendors set limits per model)."""
    timeouts: Timeouts = Field(default_factory=Timeouts)
    extra_headers: dict[str, str] = Field(default_factory=dict)
    anthropic_version: str = "2023-06-01"

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        # The value is not echoed back: a URL can carry a password or a token.
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("base_url must be an http:// or https:// URL")
        if "@" in value.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("base_url must not carry credentials (user:password@); the key comes from api_key_env")
        return value.rstrip("/")

    @field_validator("extra_headers")
    @classmethod
    def _no_credential_headers(cls, value: dict[str, str]) -> dict[str, str]:
        # They would replace the auth header built from api_key_env, and put a secret in the config.
        carrying = sorted(name for name in value if name.lower() in CREDENTIAL_HEADERS)
        if carrying:
            raise ValueError(
                f"extra_headers must not carry credentials ({', '.join(carrying)}); the key comes from api_key_env"
            )
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        # A common slip is pasting the key itself here; refuse without echoing it back.
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("api_key_env must be the *name* of an environment variable (letters, digits, '_')")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_key_env(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and not data.get("api_key_env") and isinstance(data.get("name"), str):
            return {**data, "api_key_env": key_env_for(data["name"])}
        return data

    @model_validator(mode="before")
    @classmethod
    def _default_caps(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("caps") is None:
            protocol = data.get("protocol")
            known: Protocol = "anthropic" if protocol == "anthropic" else "gemini" if protocol == "gemini" else "openai"
            return {**data, "caps": BatchCaps.defaults_for(known)}
        return data

    def resolve_api_key(self) -> str:
        """The key: the explicit one, else the env var's value read now; a missing key names the variable."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        value = os.environ.get(self.api_key_env, "").strip()
        if not value:
            raise ConfigError(
                f"provider {self.name!r} needs an API key in the environment variable {self.api_key_env}, "
                "which is not set",
                provider=self.name,
                api_key_env=self.api_key_env,
            )
        return value

    def limits_for(self, model: str) -> RateLimits:
        return self.model_rate_limits.get(model, self.rate_limits)

    def serves(self, model: str) -> bool:
        return any(model == entry or fnmatch.fnmatchcase(model, entry) for entry in self.models)


# Defaults filled in for well-known provider names, so a config can say just `openai: {models: [...]}`.
# Their keys follow the naming rule like any provider's: OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY.
PRESETS: dict[str, dict[str, str]] = {
    "openai": {"protocol": "openai", "base_url": "https://api.openai.com/v1"},
    "anthropic": {"protocol": "anthropic", "base_url": "https://api.anthropic.com"},
    "gemini": {"protocol": "openai", "base_url": "https://generativelanguage.googleapis.com/v1beta/openai"},
}
# What a provider that names its protocol gets when its name's preset speaks another one:
# `gemini: {protocol: gemini}` is Google's native API, not the OpenAI-compatible surface.
PROTOCOL_PRESETS: dict[str, dict[str, str]] = {
    "gemini": {"protocol": "gemini", "base_url": GEMINI_NATIVE_BASE_URL},
}


def _is_pattern(entry: str) -> bool:
    return any(ch in entry for ch in "*?[")


def _specificity(pattern: str) -> int:
    return sum(ch not in "*?[]" for ch in pattern)


class ProviderRegistry:
    """Maps each model to the one provider that serves it."""

    def __init__(self, providers: list[ProviderConfig]) -> None:
        if not providers:
            raise ConfigError("the provider registry is empty: configure at least one provider")
        self._providers: dict[str, ProviderConfig] = {}
        self._exact: dict[str, ProviderConfig] = {}
        patterns: list[tuple[str, ProviderConfig]] = []
        pattern_owner: dict[str, str] = {}
        for provider in providers:
            if provider.name in self._providers:
                raise ConfigError(f"provider {provider.name!r} is configured twice", provider=provider.name)
            self._providers[provider.name] = provider
            for entry in provider.models:
                if _is_pattern(entry):
                    owner = pattern_owner.setdefault(entry, provider.name)
                    if owner != provider.name:
                        raise ConfigError(
                            f"model pattern {entry!r} is listed by both {owner!r} and {provider.name!r}; "
                            "a model must route to one provider",
                            pattern=entry,
                            providers=[owner, provider.name],
                        )
                    patterns.append((entry, provider))
                elif entry in self._exact:
                    raise ConfigError(
                        f"model {entry!r} is listed by both {self._exact[entry].name!r} and {provider.name!r}",
                        model=entry,
                    )
                else:
                    self._exact[entry] = provider
        # Stable sort: equally specific patterns keep configuration order.
        self._patterns = sorted(patterns, key=lambda item: -_specificity(item[0]))
        self._routed: dict[str, ProviderConfig] = {}  # models already matched against the patterns

    @property
    def providers(self) -> list[ProviderConfig]:
        return list(self._providers.values())

    def get(self, name: str) -> ProviderConfig:
        try:
            return self._providers[name]
        except KeyError:
            raise ConfigError(
                f"unknown provider {name!r}: configured providers are {', '.join(sorted(self._providers))}",
                provider=name,
            ) from None

    def provider_for(self, model: str) -> ProviderConfig:
        provider = self._exact.get(model) or self._routed.get(model)
        if provider is not None:
            return provider
        provider = self._route_by_pattern(model)
        self._routed[model] = provider
        return provider

    def _route_by_pattern(self, model: str) -> ProviderConfig:
        matches = [(p, c) for p, c in self._patterns if fnmatch.fnmatchcase(model, p)]
        if matches:
            pattern, chosen = matches[0]
            rivals = [
                (p, c) for p, c in matches[1:] if _specificity(p) == _specificity(pattern) and c.name != chosen.name
            ]
            if rivals:
                # Two providers' patterns fit equally well: routing by configuration order would
                # silently send work (and a key) where the user may not expect it.
                other_pattern, other = rivals[0]
                raise ConfigError(
                    f"model {model!r} matches {pattern!r} of {chosen.name!r} and {other_pattern!r} of {other.name!r} "
                    "equally; list it by its exact name under one provider",
                    model=model,
                    providers=[chosen.name, other.name],
                )
            return chosen
        known = list(self._exact) + [pattern for pattern, _ in self._patterns]
        raise UnknownModelError(model, known, what="provider registry")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "provider config") -> ProviderRegistry:
        """Build from ``{"providers": {name: {...}}}`` (or a list of provider mappings).

        Well-known names (openai, anthropic, gemini) get their protocol, base URL and key
        variable filled in unless given. A literal ``api_key`` is refused: keys live in the
        environment (``api_key_env``), so a registry file can be committed and shown in errors.
        """
        if not isinstance(data, Mapping) or "providers" not in data:
            raise ConfigError(f"{source} must be a mapping with a 'providers' key")
        raw = data["providers"]
        if isinstance(raw, Mapping):
            entries = [{"name": name, **(spec or {})} for name, spec in raw.items()]
        elif isinstance(raw, list):
            entries = [dict(spec) for spec in raw]
        else:
            raise ConfigError(f"'providers' in {source} must be a mapping of name to provider, or a list of providers")
        providers = []
        for entry in entries:
            name = str(entry.get("name", "?"))
            if "api_key" in entry:
                raise ConfigError(
                    f"provider {name!r} in {source} has an api_key: keys never live in the provider config; "
                    "put it in the environment variable named by api_key_env instead",
                    provider=name,
                )
            preset = PRESETS.get(name, {})
            protocol = entry.get("protocol")
            if protocol is not None and protocol != preset.get("protocol"):
                preset = dict(PROTOCOL_PRESETS.get(protocol, {}))
            merged = {**preset, **entry}
            try:
                providers.append(ProviderConfig.model_validate(merged))
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'provider'}: {err['msg']}" for err in exc.errors()
                )
                raise ConfigError(f"provider {name!r} is misconfigured: {problems}", provider=name) from None
        return cls(providers)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ProviderRegistry:
        """From a providers.yaml; errors say where and what, never quoting the file (it may hold a secret)."""
        data = load_yaml_file(path, "provider config")
        return cls.from_mapping(data or {}, source=str(path))

    @classmethod
    def for_emulator(cls, base_url: str, api_key: str = "emulator", **overrides: Any) -> ProviderRegistry:
        """The bundled emulator: Anthropic's protocol for ``claude-*``, Gemini's native one for
        ``gemini-*``, OpenAI's for every other model.

        ``overrides`` (caps, rate_limits, timeouts, ...) apply to every provider.
        """
        root = base_url.rstrip("/")
        common = {"api_key_env": "BATCH_PIPELINES_EMULATOR_KEY", "api_key": api_key, **overrides}
        return cls(
            [
                ProviderConfig(
                    name="emulator-openai", protocol="openai", base_url=f"{root}/v1", models=["*"], **common
                ),
                ProviderConfig(
                    name="emulator-anthropic", protocol="anthropic", base_url=root, models=["claude-*"], **common
                ),
                ProviderConfig(name="emulator-gemini", protocol="gemini", base_url=root, models=["gemini-*"], **common),
            ]
        )
