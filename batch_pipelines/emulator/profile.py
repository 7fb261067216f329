"""The fault and timing profile: what the emulated provider does besides answering.

A profile is a YAML mapping whose every key is optional. It is validated once, when loaded,
into an immutable ``Profile``; an unknown key or a value out of range is a ``ConfigError``
naming the key, so a typo in a fault profile fails loudly instead of silently testing nothing.
Bundled profiles (``default``, ``demo``, ``faulty``, ``realistic``) live beside this module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

from batch_pipelines.core.config_files import load_yaml_file
from batch_pipelines.core.errors import ConfigError

PROFILES_DIR = Path(__file__).with_name("profiles")
ITEM_ERROR_KINDS = ("invalid_request_400", "server_error_500", "rate_limited_429")


_P95_Z = NormalDist().inv_cdf(0.95)
_UNIT = NormalDist()


@dataclass(frozen=True, slots=True)
class Span:
    """A closed range of virtual seconds; each batch draws its value from it (seeded).

    Uniform over ``[min, max]``; or, with ``median`` and ``p95``, lognormal (real batch
    turnaround is long-tailed: most batches end within an hour or two, a few take most of the
    window), clamped to ``[min, max]``.
    """

    min: float
    max: float
    median: float | None = None
    p95: float | None = None

    def draw(self, u: float) -> float:
        """The value for the uniform number ``u`` in [0, 1)."""
        if self.median is None or self.p95 is None:
            return self.min + u * (self.max - self.min)
        sigma = math.log(self.p95 / self.median) / _P95_Z
        z = _UNIT.inv_cdf(min(max(u, 1e-12), 1.0 - 1e-12))
        return min(self.max, max(self.min, self.median * math.exp(sigma * z)))


@dataclass(frozen=True, slots=True)
class Profile:
    seed: int = 0
    # Batch timing, in virtual seconds.
    batch_completion_seconds: Span = Span(30.0, 120.0)
    validation_seconds: float = 5.0
    finalizing_seconds: float = 5.0
    cancel_seconds: float = 10.0
    # Per-line faults inside batches.
    item_error_rate: float = 0.0
    item_error_kinds: Mapping[str, float] = field(default_factory=lambda: {k: 1.0 for k in ITEM_ERROR_KINDS})
    off_list_rate: float = 0.0
    missing_line_rate: float = 0.0
    malformed_output_lines: int = 0
    all_lines_fail: bool = False
    # Batches that run out of time: chosen per batch with expire_rate, or every batch.
    expire_rate: float = 0.0
    never_complete: bool = False
    unfinished_at_expiry: float = 0.5
    # Queue limits per model (OpenAI's enqueued-token limit), in prompt tokens.
    enqueued_token_limits: Mapping[str, int] = field(default_factory=dict)
    # Sync-lane and route faults.
    sync_429_burst: int = 0
    sync_429_rate: float = 0.0
    retry_after_seconds: float = 1.0
    sync_5xx_rate: float = 0.0
    slow_response_seconds: float = 0.0
    route_5xx_rate: float = 0.0
    download_drop_after_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["item_error_kinds"] = dict(self.item_error_kinds)
        out["enqueued_token_limits"] = dict(self.enqueued_token_limits)
        return out

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> Profile:
        raw = dict(raw or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"unknown emulator profile key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, value in raw.items():
            values[name] = _PARSERS[name](name, value)
        return cls(**values)


def _number(name: str, value: Any, *, lower: float = 0.0, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"emulator profile key {name!r} must be a finite number, got {value!r}")
    if value < lower or (upper is not None and value > upper):
        bound = f"[{lower}, {upper}]" if upper is not None else f">= {lower}"
        raise ConfigError(f"emulator profile key {name!r} must be {bound}, got {value!r}")
    return float(value)


def _rate(name: str, value: Any) -> float:
    return _number(name, value, upper=1.0)


def _seconds(name: str, value: Any) -> float:
    return _number(name, value)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"emulator profile key {name!r} must be a non-negative integer, got {value!r}")
    return value


def _seed(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"emulator profile key {name!r} must be an integer, got {value!r}")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"emulator profile key {name!r} must be true or false, got {value!r}")
    return value


def _span(name: str, value: Any) -> Span:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = _seconds(name, value)
        return Span(seconds, seconds)
    if isinstance(value, Mapping):  # a profile's own to_dict writes the unused lognormal keys as null
        value = {k: v for k, v in value.items() if v is not None}
    if not isinstance(value, Mapping) or set(value) - {"min", "max", "median", "p95"} or not value:
        raise ConfigError(
            f"emulator profile key {name!r} must be a number, {{min: S, max: S}} or "
            f"{{median: S, p95: S, min: S, max: S}}, got {value!r}"
        )
    if "median" in value or "p95" in value:
        return _lognormal_span(name, value)
    low = _seconds(f"{name}.min", value.get("min", value.get("max")))
    high = _seconds(f"{name}.max", value.get("max", value.get("min")))
    if high < low:
        raise ConfigError(f"emulator profile key {name!r} has max {high} below min {low}")
    return Span(low, high)


def _lognormal_span(name: str, value: Mapping[str, Any]) -> Span:
    if "median" not in value or "p95" not in value:
        raise ConfigError(f"emulator profile key {name!r} needs both median and p95 for a lognormal, got {value!r}")
    median = _number(f"{name}.median", value["median"], lower=1e-9)
    p95 = _number(f"{name}.p95", value["p95"], lower=1e-9)
    if p95 <= median:
        raise ConfigError(f"emulator profile key {name!r} has p95 {p95} not above median {median}")
    low = _seconds(f"{name}.min", value.get("min", 0))
    # Capped at the 24 h completion window unless told otherwise: a batch never runs past it.
    high = _seconds(f"{name}.max", value.get("max", 86_400))
    if high < low:
        raise ConfigError(f"emulator profile key {name!r} has max {high} below min {low}")
    return Span(low, high, median, p95)


def _weights(name: str, value: Any) -> dict[str, float]:
    if isinstance(value, (list, tuple)):
        value = {kind: 1.0 for kind in value}
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"emulator profile key {name!r} must map error kinds to weights, got {value!r}")
    unknown = sorted(set(value) - set(ITEM_ERROR_KINDS))
    if unknown:
        raise ConfigError(
            f"emulator profile key {name!r} names unknown kind(s) {', '.join(unknown)}; "
            f"known: {', '.join(ITEM_ERROR_KINDS)}"
        )
    weights = {kind: _number(f"{name}.{kind}", w) for kind, w in value.items()}
    if sum(weights.values()) <= 0:
        raise ConfigError(f"emulator profile key {name!r} needs at least one positive weight")
    return weights


def _token_limits(name: str, value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"emulator profile key {name!r} must map model names to token counts, got {value!r}")
    return {str(model): _count(f"{name}.{model}", limit) for model, limit in value.items()}


_PARSERS = {
    "seed": _seed,
    "batch_completion_seconds": _span,
    "validation_seconds": _seconds,
    "finalizing_seconds": _seconds,
    "cancel_seconds": _seconds,
    "item_error_rate": _rate,
    "item_error_kinds": _weights,
    "off_list_rate": _rate,
    "missing_line_rate": _rate,
    "malformed_output_lines": _count,
    "all_lines_fail": _flag,
    "expire_rate": _rate,
    "never_complete": _flag,
    "unfinished_at_expiry": _rate,
    "enqueued_token_limits": _token_limits,
    "sync_429_burst": _count,
    "sync_429_rate": _rate,
    "retry_after_seconds": _seconds,
    "sync_5xx_rate": _rate,
    "slow_response_seconds": _seconds,
    "route_5xx_rate": _rate,
    "download_drop_after_bytes": _count,
}


def bundled_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(source: Mapping[str, Any] | str | Path | None) -> Profile:
    """A profile from a mapping, a YAML file path, or the name of a bundled profile."""
    if source is None:
        source = "default"
    if isinstance(source, Profile):
        return source
    if isinstance(source, Mapping):
        return Profile.from_mapping(source)
    path = Path(source)
    if not path.exists() and isinstance(source, str) and source in bundled_profiles():
        path = PROFILES_DIR / f"{source}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"emulator profile {str(source)!r} is neither a file nor a bundled profile "
            f"({', '.join(bundled_profiles())})"
        )
    raw = load_yaml_file(path, "emulator profile")
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"emulator profile {str(path)!r} must be a YAML mapping of keys to values")
    return Profile.from_mapping(raw)
