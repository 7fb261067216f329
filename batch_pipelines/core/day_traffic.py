"""One simulated day of traffic, seeded: the reference day's calls, their times, lanes and deadlines. Pure.

The defaults are the reference day of issue 10: 200,000 application calls over 24 hours with a
daytime peak, 25% interactive and 75% deferrable, deferrable deadlines drawn from none 30%,
1 h 10%, 4 h 20%, 12 h 20%, 36 h 20%; chat and embeddings over four models and three wire
protocols; a share of chat calls carrying a long stable system prompt, so prompt-cache pricing
shows. The nightly workloads add about 50,000 items at 01:00. Every key can be set from a YAML
mapping (``TrafficConfig.from_mapping``); an unknown key or a bad value is a ``ConfigError``
naming it, before anything runs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from batch_pipelines.core.errors import ConfigError

DAY_SECONDS = 86_400
# model -> share of application calls. Chat on OpenAI, Anthropic and Gemini's native protocol;
# embeddings on OpenAI.
DEFAULT_MODELS: dict[str, float] = {
    "gpt-5.4-mini": 0.40,
    "claude-sonnet-4.6": 0.20,
    "gemini-3-flash": 0.15,
    "text-embedding-3-small": 0.25,
}
# deadline in hours ("none" for no deadline) -> share of deferrable calls
DEFAULT_DEADLINES: dict[str, float] = {"none": 0.30, "1": 0.10, "4": 0.20, "12": 0.20, "36": 0.20}
# The nightly workloads: job -> (model, items), submitted together at 01:00.
DEFAULT_WORKLOADS: dict[str, tuple[str, int]] = {
    "classification": ("gpt-5.4-mini", 20_000),
    "evals": ("claude-sonnet-4.6", 10_000),
    "nightly_reports": ("gemini-3-flash", 5_000),
    "embedding_backfill": ("text-embedding-3-small", 15_000),
}
EMBEDDING_PREFIX = "text-embedding"
ANTHROPIC_PREFIX = "claude"
# Long enough (well over 1,024 tokens) that providers cache it and bill the cached part at their cached rate.
STABLE_SYSTEM_PROMPT = "You label support tickets for an online shop. " + "Policy: " + "be brief and exact; " * 300


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    seed: int = 2026
    calls: int = 200_000
    interactive_share: float = 0.25
    deadlines: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    models: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    cache_friendly_share: float = 0.30
    hours: float = 24.0  # arrivals spread over this many hours (shorter for smoke tests)
    peak_hour: float = 14.0  # the daytime peak's centre, hours after midnight
    peak_factor: float = 3.0  # the peak hour's rate over the night's
    workloads: Mapping[str, tuple[str, int]] = field(default_factory=lambda: dict(DEFAULT_WORKLOADS))
    workload_hour: float = 1.0
    workload_deadline_hours: float = 12.0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> TrafficConfig:
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown traffic key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            values[name] = _PARSERS[name](name, value)
        return cls(**values)

    def scaled(self, factor: float) -> TrafficConfig:
        """The same mix with ``factor`` times the calls and workload items (at least one of each)."""
        return TrafficConfig(
            seed=self.seed,
            calls=max(1, round(self.calls * factor)),
            interactive_share=self.interactive_share,
            deadlines=self.deadlines,
            models=self.models,
            cache_friendly_share=self.cache_friendly_share,
            hours=self.hours,
            peak_hour=self.peak_hour,
            peak_factor=self.peak_factor,
            workloads={job: (model, max(1, round(n * factor))) for job, (model, n) in self.workloads.items()},
            workload_hour=self.workload_hour,
            workload_deadline_hours=self.workload_deadline_hours,
        )


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One call of the day: when it arrives (seconds after midnight), its lane, deadline and body."""

    index: int
    at_s: float
    kind: str  # "interactive", "deferrable", or the workload's job name
    model: str
    body: Mapping[str, Any]
    deadline_s: float | None  # seconds after midnight, or None
    cache_friendly: bool

    @property
    def is_workload(self) -> bool:
        return self.kind not in ("interactive", "deferrable")


def hourly_weights(config: TrafficConfig) -> list[float]:
    """Relative arrival rate per hour: 1 at night, ``peak_factor`` at ``peak_hour`` (a Gaussian bump)."""
    return [
        1.0 + (config.peak_factor - 1.0) * math.exp(-(((h + 0.5 - config.peak_hour) / 4.0) ** 2)) for h in range(24)
    ]


def generate(config: TrafficConfig) -> list[PlannedCall]:
    """The day's application calls in arrival order, then the workloads' items; the same seed, the same day."""
    rng = random.Random(config.seed)
    # Draw the hour of a 24-hour day, then squeeze the day into ``config.hours``.
    squeeze = config.hours / 24.0
    hours = rng.choices(range(24), weights=hourly_weights(config), k=config.calls)
    times = sorted((h * 3600 + rng.random() * 3600) * squeeze for h in hours)
    models, model_weights = list(config.models), list(config.models.values())
    bands, band_weights = list(config.deadlines), list(config.deadlines.values())
    calls: list[PlannedCall] = []
    for index, at in enumerate(times):
        model = rng.choices(models, weights=model_weights)[0]
        interactive = rng.random() < config.interactive_share
        cached = not model.startswith(EMBEDDING_PREFIX) and rng.random() < config.cache_friendly_share
        deadline = None
        if not interactive:
            band = rng.choices(bands, weights=band_weights)[0]
            deadline = None if band == "none" else at + float(band) * 3600
        kind = "interactive" if interactive else "deferrable"
        calls.append(PlannedCall(index, at, kind, model, request_body(model, index, cached), deadline, cached))
    start = config.workload_hour * 3600
    for job, (model, count) in config.workloads.items():
        for _ in range(count):
            body = request_body(model, len(calls), False)
            deadline = start + config.workload_deadline_hours * 3600
            calls.append(PlannedCall(len(calls), start, job, model, body, deadline, False))
    return calls


def request_body(model: str, index: int, cache_friendly: bool) -> dict[str, Any]:
    """A small request in the vendor's own shape (Anthropic messages for claude-*, else OpenAI's)."""
    if model.startswith(EMBEDDING_PREFIX):
        return {"model": model, "input": f"Ticket {index}: the parcel for order {index} arrived damaged."}
    system = STABLE_SYSTEM_PROMPT if cache_friendly else "Label the ticket: billing, bug, account, other."
    user = f"Ticket {index}: I was charged twice for order {1000 + index}."
    if model.startswith(ANTHROPIC_PREFIX):
        return {"model": model, "max_tokens": 16, "system": system, "messages": [{"role": "user", "content": user}]}
    return {
        "model": model,
        "max_completion_tokens": 16,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    }


def _int(name: str, value: Any, *, lower: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lower:
        raise ConfigError(f"traffic key {name!r} must be an integer >= {lower}, got {value!r}")
    return value


def _number(name: str, value: Any, *, lower: float = 0.0, upper: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < lower or (upper is not None and value > upper):
        bound = f"in [{lower}, {upper}]" if upper is not None else f">= {lower}"
        raise ConfigError(f"traffic key {name!r} must be a number {bound}, got {value!r}")
    return float(value)


def _share(name: str, value: Any) -> float:
    return _number(name, value, upper=1.0)


def _weights(name: str, value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"traffic key {name!r} must map names to weights, got {value!r}")
    weights = {str(k): _number(f"{name}.{k}", w) for k, w in value.items()}
    if sum(weights.values()) <= 0:
        raise ConfigError(f"traffic key {name!r} needs at least one positive weight")
    return weights


def _deadlines(name: str, value: Any) -> dict[str, float]:
    weights = _weights(name, value)
    for band in weights:
        if band != "none":
            _number(f"{name} band", _float_or_none(band), lower=0.0)
    return weights


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _workloads(name: str, value: Any) -> dict[str, tuple[str, int]]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"traffic key {name!r} must map job names to {{model: M, items: N}}, got {value!r}")
    out: dict[str, tuple[str, int]] = {}
    for job, spec in value.items():
        if not isinstance(spec, Mapping) or set(spec) != {"model", "items"} or not isinstance(spec["model"], str):
            raise ConfigError(f"traffic key {name}.{job} must be {{model: M, items: N}}, got {spec!r}")
        if job in ("interactive", "deferrable"):
            raise ConfigError(f"traffic key {name}.{job}: a workload cannot be named {job!r}")
        out[str(job)] = (spec["model"], _int(f"{name}.{job}.items", spec["items"]))
    return out


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "seed": lambda n, v: _int(n, v, lower=-(2**63)),
    "calls": _int,
    "interactive_share": _share,
    "deadlines": _deadlines,
    "models": _weights,
    "cache_friendly_share": _share,
    "hours": lambda n, v: _number(n, v, lower=0.01, upper=24.0),
    "peak_hour": lambda n, v: _number(n, v, upper=24.0),
    "peak_factor": lambda n, v: _number(n, v, lower=1.0),
    "workloads": _workloads,
    "workload_hour": lambda n, v: _number(n, v, upper=24.0),
    "workload_deadline_hours": lambda n, v: _number(n, v, lower=0.0),
}
