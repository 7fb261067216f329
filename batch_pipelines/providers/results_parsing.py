"""Batch result lines -> one ``ItemOutcome`` per submitted custom_id (both vendors).

The vendors' result files are parsed here, once, at the edge. Reconciliation rules:

- every expected custom_id comes out exactly once; ids with no line come out ``MISSING``;
- a custom_id with several lines keeps its first line (files are read in the order given:
  the output file before the error file, so an answer beats an error) and the rest are
  counted as duplicates;
- a line that is not JSON, or has no custom_id, is counted as malformed and skipped; an id
  whose only line was malformed therefore comes out ``MISSING`` (with a reason saying so);
- a line for an id we never submitted is counted and ignored.

Two ways in: ``iter_outcomes`` yields ``ItemOutcome`` values (orjson per line; for the
ledger), and the results writer builds the same outcomes as Arrow columns for large files
(see ``results/openai_bulk.py``; ``OPENAI_LINE_SCHEMA`` is the explicit schema it reads with).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa

from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.usage import ZERO_USAGE, Usage
from batch_pipelines.providers.gemini_results import line_outcome as gemini_line_outcome

Protocol = Literal["openai", "anthropic", "gemini"]
MAX_REASON_CHARS = 500
_MAX_EXAMPLES = 20

# OpenAI marks lines that never ran with these error codes (reported by users and emulators).
EXPIRED_CODES = frozenset({"batch_expired"})
CANCELLED_CODES = frozenset({"batch_cancelled", "batch_canceled"})

# Anthropic error types -> the HTTP status the same error has on the sync API.
ANTHROPIC_ERROR_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_INT = pa.int64()
OPENAI_LINE_SCHEMA = pa.schema(
    [
        ("custom_id", pa.string()),
        (
            "response",
            pa.struct(
                [
                    ("status_code", pa.int32()),
                    (
                        "body",
                        pa.struct(
                            [
                                ("model", pa.string()),
                                ("choices", pa.list_(pa.struct([("message", pa.struct([("content", pa.string())]))]))),
                                (
                                    "usage",
                                    pa.struct(
                                        [
                                            ("prompt_tokens", _INT),
                                            ("completion_tokens", _INT),
                                            ("prompt_tokens_details", pa.struct([("cached_tokens", _INT)])),
                                            ("completion_tokens_details", pa.struct([("reasoning_tokens", _INT)])),
                                        ]
                                    ),
                                ),
                                (
                                    "error",
                                    pa.struct([("message", pa.string()), ("code", pa.string()), ("type", pa.string())]),
                                ),
                            ]
                        ),
                    ),
                ]
            ),
        ),
        ("error", pa.struct([("code", pa.string()), ("message", pa.string())])),
    ]
)
"""What the outcomes table needs from an OpenAI output/error line, and nothing else."""


@dataclass
class ParseReport:
    """What reconciliation found besides the outcomes: the evidence for odd files."""

    lines: int = 0
    malformed: int = 0
    duplicates: int = 0
    unexpected: int = 0
    missing: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    """``file:line`` of the first malformed lines."""
    duplicate_ids: list[str] = field(default_factory=list)
    unexpected_ids: list[str] = field(default_factory=list)

    def note_malformed(self, where: str) -> None:
        self.malformed += 1
        if len(self.malformed_examples) < _MAX_EXAMPLES:
            self.malformed_examples.append(where)

    def note_duplicate(self, custom_id: str) -> None:
        self.duplicates += 1
        if len(self.duplicate_ids) < _MAX_EXAMPLES:
            self.duplicate_ids.append(custom_id)

    def note_unexpected(self, custom_id: str) -> None:
        self.unexpected += 1
        if len(self.unexpected_ids) < _MAX_EXAMPLES:
            self.unexpected_ids.append(custom_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "malformed": self.malformed,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "missing": self.missing,
            "malformed_examples": list(self.malformed_examples),
            "duplicate_ids": list(self.duplicate_ids),
            "unexpected_ids": list(self.unexpected_ids),
        }


def _int(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def _reason(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text[:MAX_REASON_CHARS]


def openai_usage(usage: Any) -> Usage:
    """Usage of one OpenAI response body (chat or embeddings)."""
    if not isinstance(usage, dict):
        return ZERO_USAGE
    prompt = _int(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    output = _int(usage.get("completion_tokens"))
    out_details = usage.get("completion_tokens_details")
    reasoning = _int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
    return Usage(prompt, min(cached, prompt), 0, output, min(reasoning, output))


def anthropic_usage(usage: Any) -> Usage:
    """Anthropic's usage with cache reads and writes folded into input_tokens (our convention)."""
    if not isinstance(usage, dict):
        return ZERO_USAGE
    read = _int(usage.get("cache_read_input_tokens"))
    write = _int(usage.get("cache_creation_input_tokens"))
    return Usage(_int(usage.get("input_tokens")) + read + write, read, write, _int(usage.get("output_tokens")), 0)


def openai_line_outcome(line: dict[str, Any], default_model: str | None) -> ItemOutcome | None:
    """One parsed OpenAI output/error line as an outcome; None if it has no usable shape."""
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str):
        return None
    response = line.get("response")
    if isinstance(response, dict) and response.get("status_code") is not None:
        status = response.get("status_code")
        body = response.get("body")
        if not isinstance(body, dict):
            body = {}
        model = body.get("model") if isinstance(body.get("model"), str) else default_model
        if status == 200:
            return ItemOutcome(
                custom_id, OutcomeKind.SUCCEEDED, None, openai_usage(body.get("usage")), body, 200, None, model
            )
        raw_error = body.get("error")
        body_error = raw_error if isinstance(raw_error, dict) else {}
        code = body_error.get("code") or body_error.get("type")
        return ItemOutcome(
            custom_id,
            OutcomeKind.FAILED,
            _reason(body_error.get("message")) or f"HTTP {status}",
            ZERO_USAGE,
            None,
            status if type(status) is int else None,
            str(code) if code is not None else None,
            model,
        )
    error = line.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        kind = (
            OutcomeKind.EXPIRED
            if code in EXPIRED_CODES
            else OutcomeKind.CANCELLED
            if code in CANCELLED_CODES
            else OutcomeKind.FAILED
        )
        return ItemOutcome(
            custom_id,
            kind,
            _reason(error.get("message")) or str(code),
            ZERO_USAGE,
            None,
            None,
            str(code) if code is not None else None,
            default_model,
        )
    return None


def anthropic_line_outcome(line: dict[str, Any], default_model: str | None) -> ItemOutcome | None:
    """One parsed Anthropic result line as an outcome; None if it has no usable shape."""
    custom_id = line.get("custom_id")
    result = line.get("result")
    if not isinstance(custom_id, str) or not isinstance(result, dict):
        return None
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message")
        if not isinstance(message, dict):
            return None
        model = message.get("model") if isinstance(message.get("model"), str) else default_model
        return ItemOutcome(
            custom_id, OutcomeKind.SUCCEEDED, None, anthropic_usage(message.get("usage")), message, 200, None, model
        )
    if kind == "errored":
        error = result.get("error")
        # The documented shape nests the API error: {"type": "error", "error": {"type", "message"}}.
        if isinstance(error, dict) and isinstance(error.get("error"), dict):
            error = error["error"]
        error = error if isinstance(error, dict) else {}
        error_type = error.get("type")
        return ItemOutcome(
            custom_id,
            OutcomeKind.FAILED,
            _reason(error.get("message")) or str(error_type or "errored"),
            ZERO_USAGE,
            None,
            ANTHROPIC_ERROR_STATUS.get(error_type) if isinstance(error_type, str) else None,
            str(error_type) if error_type is not None else None,
            default_model,
        )
    if kind == "canceled":
        return ItemOutcome(
            custom_id, OutcomeKind.CANCELLED, "the batch was cancelled before this request ran", model=default_model
        )
    if kind == "expired":
        return ItemOutcome(
            custom_id, OutcomeKind.EXPIRED, "the batch expired before this request ran", model=default_model
        )
    return None


_LINE_PARSERS = {"openai": openai_line_outcome, "anthropic": anthropic_line_outcome, "gemini": gemini_line_outcome}


def missing_reason(report: ParseReport) -> str:
    if report.malformed:
        return f"no readable result line for this item (the results held {report.malformed} malformed line(s))"
    return "the batch ended without a result line for this item"


def iter_outcomes(
    paths: Iterable[Path | None],
    expected_custom_ids: Iterable[str],
    *,
    protocol: Protocol,
    model: str | None = None,
    report: ParseReport | None = None,
) -> Iterator[ItemOutcome]:
    """Every expected custom_id exactly once, streaming the result files line by line.

    Memory holds the expected ids and the ids seen so far, never the outcomes themselves.
    Pass a ``ParseReport`` to learn about malformed, duplicate, unexpected and missing lines.
    """
    report = report if report is not None else ParseReport()
    parse_line = _LINE_PARSERS[protocol]
    expected = list(expected_custom_ids)
    wanted = set(expected)
    seen: set[str] = set()
    loads = orjson.loads
    for path in paths:
        if path is None:
            continue
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                report.lines += 1
                try:
                    line = loads(raw)
                except orjson.JSONDecodeError:
                    report.note_malformed(f"{Path(path).name}:{number}")
                    continue
                outcome = parse_line(line, model) if isinstance(line, dict) else None
                if outcome is None:
                    report.note_malformed(f"{Path(path).name}:{number}")
                    continue
                custom_id = outcome.custom_id
                if custom_id not in wanted:
                    report.note_unexpected(custom_id)
                elif custom_id in seen:
                    report.note_duplicate(custom_id)
                else:
                    seen.add(custom_id)
                    yield outcome
    if len(seen) < len(wanted):
        reason = missing_reason(report)
        for custom_id in expected:
            if custom_id not in seen:
                seen.add(custom_id)  # an id listed twice in ``expected`` still comes out once
                report.missing += 1
                yield ItemOutcome(custom_id, OutcomeKind.MISSING, reason, model=model)
