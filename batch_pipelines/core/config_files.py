"""The one way a configuration file is read: bounded in size, UTF-8, YAML, errors that echo nothing.

Price books, provider registries and emulator profiles are small files a person writes. Reading
one must not hang on ``/dev/zero`` or a huge file, must not crash on bytes that are not UTF-8,
and a syntax error must say where it is (line, column, what is wrong) without quoting the text:
a provider registry's line may hold a secret, and the error reaches Dagster's event log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from batch_pipelines.core.errors import ConfigError

MAX_CONFIG_BYTES = 1_000_000
"""A hand-written configuration file is kilobytes; anything past this is not one."""


def read_config_text(path: str | Path, what: str, *, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The file's text, or a ConfigError naming ``what`` and the file (never its content)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise ConfigError(f"cannot read {what} {str(path)!r}: file not found", path=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror}", path=str(path)) from None
    if len(raw) > max_bytes:
        raise ConfigError(
            f"{what} {str(path)!r} is larger than {max_bytes:,} bytes; is it the right file?", path=str(path)
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start} cannot be decoded)", path=str(path)
        ) from None


def load_yaml_file(path: str | Path, what: str, *, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """The file parsed as YAML; a syntax error names the line, column and problem, never the text."""
    text = read_config_text(path, what, max_bytes=max_bytes)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        summary = yaml_error_summary(exc)
    # Raised outside the except block, so not even the suppressed context holds PyYAML's snippet.
    raise ConfigError(f"{what} {str(Path(path))!r} is not valid YAML: {summary}", path=str(path))


def yaml_error_summary(exc: yaml.YAMLError) -> str:
    """Where and what, from PyYAML's error, leaving out the snippet of source it would print."""
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [
            f"{text} at {_position(mark)}" if mark is not None else text
            for text, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark))
            if text
        ]
        return ", ".join(parts) or "syntax error"
    return type(exc).__name__


def _position(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"
