"""Checking a traffic log's values with Arrow compute: typed columns out, and a BadRow for each row that fails.

Every check is one vectorised pass over a block's column (no Python loop per row). A row that
fails any check leaves the block whole and is reported once, with the first problem found, so
the counts add up: rows read + bad rows = rows in the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FIELDS = (
    "time",
    "model",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "blocked",
    "latency_budget_s",
    "chain_id",
    "chain_step",
    "tag",
    "lane",
)
UNTAGGED = "(untagged)"
CLEAN_SCHEMA = pa.schema(
    [
        ("line", pa.int64()),
        ("time", pa.timestamp("s", tz="UTC")),
        ("model", pa.string()),
        ("input_tokens", pa.int64()),
        ("cached_input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("blocked", pa.bool_()),
        ("latency_budget_s", pa.float64()),
        ("chain_id", pa.string()),
        ("chain_step", pa.int64()),
        ("tag", pa.string()),
        ("lane", pa.string()),
    ]
)
_INT = r"^\s*[+-]?\d+(\.0*)?\s*$"
_NUMBER = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
_TRUE = ["true", "yes", "1", "y", "t"]
_FALSE = ["false", "no", "0", "n", "f"]


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int  # the line in the file (CSV: the header is line 1; Parquet: the row number from 1)
    problem: str


@dataclass(frozen=True, slots=True)
class LogBlock:
    rows: pa.Table  # CLEAN_SCHEMA, only the rows that passed every check
    bad: list[BadRow]


class _Checks:
    """The problems found so far, one boolean mask per problem."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.masks: list[tuple[pa.Array, str]] = []

    def add(self, mask: pa.Array | pa.ChunkedArray, problem: str) -> None:
        mask = pc.fill_null(mask, False)
        if pc.any(mask).as_py():
            self.masks.append((mask, problem))

    def any_bad(self) -> pa.Array:
        result = pa.array(np.zeros(self.size, dtype=bool))
        for mask, _ in self.masks:
            result = pc.or_(result, mask)
        return result


def clean_block(raw: Mapping[str, pa.Array | pa.ChunkedArray], lines: pa.Array, bad: list[BadRow]) -> LogBlock:
    """Typed, checked columns; rows failing a check become BadRows with the first problem found."""
    size = len(lines)
    checks = _Checks(size)
    time = _times(raw["time"], checks)
    model = pc.cast(raw["model"], pa.string())
    checks.add(pc.or_(pc.is_null(model), pc.equal(pc.utf8_length(model), 0)), "no model")
    tokens = {}
    for field in ("input_tokens", "cached_input_tokens", "output_tokens"):
        tokens[field] = _ints(raw[field], field, checks, required=field != "cached_input_tokens")
    cached = pc.fill_null(tokens["cached_input_tokens"], 0)
    checks.add(pc.greater(cached, tokens["input_tokens"]), "cached_input_tokens exceed input_tokens")
    blocked = _bools(raw["blocked"], checks)
    budget = _floats(raw["latency_budget_s"], "latency_budget_s", checks)
    checks.add(pc.and_(pc.is_null(blocked), pc.is_null(budget)), "neither blocked nor latency_budget_s is set")
    chain_id = pc.cast(raw["chain_id"], pa.string())
    chain_step = _ints(raw["chain_step"], "chain_step", checks, required=False)
    checks.add(pc.and_(pc.is_valid(chain_id), pc.is_null(chain_step)), "chain_id without a chain_step")
    lane = pc.utf8_lower(pc.cast(raw["lane"], pa.string()))
    known_lane = pc.is_in(lane, value_set=pa.array(["sync", "batch"]))
    checks.add(pc.and_(pc.is_valid(lane), pc.invert(known_lane)), "lane is not sync or batch")
    tag = pc.cast(raw["tag"], pa.string())
    table = pa.table(
        {
            "line": lines,
            "time": time,
            "model": model,
            "input_tokens": tokens["input_tokens"],
            "cached_input_tokens": cached,
            "output_tokens": tokens["output_tokens"],
            "blocked": pc.fill_null(blocked, False),
            "latency_budget_s": budget,
            "chain_id": chain_id,
            "chain_step": chain_step,
            "tag": pc.fill_null(tag, UNTAGGED),
            "lane": pc.fill_null(lane, "sync"),
        },
        schema=CLEAN_SCHEMA,
    )
    if not checks.masks:
        return LogBlock(table, bad)
    any_bad = checks.any_bad()
    found = list(bad)
    seen: set[int] = set()
    for mask, problem in checks.masks:
        for number in pc.filter(lines, mask).to_pylist():
            if number not in seen:  # one problem per row: the first one checked
                seen.add(number)
                found.append(BadRow(number, problem))
    found.sort(key=lambda row: row.line)
    return LogBlock(table.filter(pc.invert(any_bad)), found)


def _ints(values: pa.Array | pa.ChunkedArray, field: str, checks: _Checks, *, required: bool) -> pa.Array:
    if required:
        checks.add(pc.is_null(values), f"no {field}")
    if pa.types.is_integer(values.type):
        result = pc.cast(values, pa.int64())
    elif pa.types.is_floating(values.type):
        checks.add(pc.not_equal(values, pc.floor(values)), f"{field} is not a whole number")
        result = pc.cast(pc.floor(values), pa.int64(), safe=False)
    elif pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        ok = pc.match_substring_regex(values, _INT)
        checks.add(pc.and_(pc.is_valid(values), pc.invert(ok)), f"{field} is not a whole number")
        digits = pc.if_else(ok, pc.utf8_trim_whitespace(values), None)
        result = pc.cast(pc.cast(digits, pa.float64()), pa.int64(), safe=False)
    elif pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.int64())
    else:
        checks.add(pc.is_valid(values), f"{field} is not a whole number")
        return pa.nulls(len(values), pa.int64())
    checks.add(pc.less(result, 0), f"{field} is negative")
    return result


def _floats(values: pa.Array | pa.ChunkedArray, field: str, checks: _Checks) -> pa.Array:
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        result = pc.cast(values, pa.float64())
    elif pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        ok = pc.match_substring_regex(values, _NUMBER)
        checks.add(pc.and_(pc.is_valid(values), pc.invert(ok)), f"{field} is not a number")
        result = pc.cast(pc.if_else(ok, pc.utf8_trim_whitespace(values), None), pa.float64())
    elif pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.float64())
    else:
        checks.add(pc.is_valid(values), f"{field} is not a number")
        return pa.nulls(len(values), pa.float64())
    checks.add(pc.less(result, 0), f"{field} is negative")
    return result


def _bools(values: pa.Array | pa.ChunkedArray, checks: _Checks) -> pa.Array:
    if pa.types.is_boolean(values.type):
        return values
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.bool_())
    text = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(values, pa.string())))
    true = pc.is_in(text, value_set=pa.array(_TRUE))
    false = pc.is_in(text, value_set=pa.array(_FALSE))
    checks.add(pc.and_(pc.is_valid(text), pc.invert(pc.or_(true, false))), "blocked is not true or false")
    return pc.if_else(true, True, pc.if_else(false, False, None))


def _times(values: pa.Array | pa.ChunkedArray, checks: _Checks) -> pa.Array:
    target = pa.timestamp("s", tz="UTC")
    checks.add(pc.is_null(values), "no time")
    if pa.types.is_timestamp(values.type):
        # Sub-second parts are dropped on purpose: the audit groups by hour.
        if values.type.tz is None:
            return pc.cast(pc.assume_timezone(values, "UTC"), target, safe=False)
        return pc.cast(values, target, safe=False)
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        return pc.cast(pc.cast(values, pa.int64(), safe=False), target)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        checks.add(pc.is_valid(values), "time is not a time")
        return pa.nulls(len(values), target)
    try:
        # The common case, and Arrow's own ISO-8601 parser: a whole column with a zone parses at once.
        return pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass  # some value is another form (fractions, no zone, epoch seconds) or not a time
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()  # replace_with_mask takes arrays, not chunked ones
    quick = pc.strptime(values, format="%Y-%m-%dT%H:%M:%S%z", unit="s", error_is_null=True)
    rest = pc.and_(pc.is_valid(values), pc.is_null(quick))
    if not pc.any(rest).as_py():
        return pc.cast(quick, target)
    # Only the values the quick parse missed pay for the regular expressions.
    parsed = _other_time_forms(pc.filter(values, rest), target)
    result = pc.replace_with_mask(pc.cast(quick, target), rest, parsed)
    checks.add(pc.and_(pc.is_valid(values), pc.is_null(result)), "time is not an ISO-8601 time or epoch seconds")
    return result


def _other_time_forms(text: pa.Array | pa.ChunkedArray, target: pa.DataType) -> pa.Array:
    """Fractional seconds, a space for the T, no zone (read as UTC), or epoch seconds; null if none fits."""
    text = pc.utf8_trim_whitespace(text)
    epoch = pc.if_else(pc.match_substring_regex(text, r"^\d+(\.\d+)?$"), text, None)
    iso = pc.replace_substring_regex(text, r"\.\d+", "")
    iso = pc.replace_substring_regex(iso, r"[zZ]$", "+0000")
    iso = pc.replace_substring_regex(iso, r"([+-]\d\d):(\d\d)$", r"\1\2")
    iso = pc.replace_substring_regex(iso, r"^(\d{4}-\d\d-\d\d) ", r"\1T")
    with_zone = pc.strptime(iso, format="%Y-%m-%dT%H:%M:%S%z", unit="s", error_is_null=True)
    naive = pc.strptime(iso, format="%Y-%m-%dT%H:%M:%S", unit="s", error_is_null=True)
    from_epoch = pc.cast(pc.cast(pc.cast(epoch, pa.float64()), pa.int64(), safe=False), target)
    result = pc.coalesce(pc.cast(with_zone, target), pc.cast(naive, target), from_epoch)
    return result.combine_chunks() if isinstance(result, pa.ChunkedArray) else result
