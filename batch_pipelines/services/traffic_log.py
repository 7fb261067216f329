"""Reading a traffic log (JSONL, CSV or Parquet) in blocks, as clean Arrow columns plus the rows that are not.

One row is one call: time, model, input/cached/output tokens, a blocked flag or a latency budget,
and optionally a chain id and step, a tag and the lane it ran on. Field names are ours; ``--map``
renames a log's own columns onto them. A block is parsed by Arrow at full speed; a JSONL or CSV
block Arrow cannot parse (a malformed line, a value of the wrong type, a blank line) is parsed
again line by line, so a bad line costs its own row only and is reported with its line number.
Every value is then checked with Arrow compute (no Python loop per row): a row that fails a check
leaves the block and becomes a ``BadRow`` saying what is wrong. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.ledger import Ledger
from batch_pipelines.services.log_checks import FIELDS, BadRow, LogBlock, clean_block

REQUIRED = ("time", "model", "input_tokens", "output_tokens")
FORMATS = ("jsonl", "csv", "parquet")
# About 100,000 rows of a typical log: big enough for Arrow's speed (and its threads), small enough
# that memory stays flat (417 MB peak for a 189 MB log, bench.audit).
BLOCK_BYTES = 16 << 20

# The types the JSONL fast path asks Arrow for; anything else sends the block to the slow path.
_JSON_TYPES = {
    "time": pa.string(),
    "model": pa.string(),
    "input_tokens": pa.int64(),
    "cached_input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "blocked": pa.bool_(),
    "latency_budget_s": pa.float64(),
    "chain_id": pa.string(),
    "chain_step": pa.int64(),
    "tag": pa.string(),
    "lane": pa.string(),
}


def parse_mapping(pairs: Mapping[str, str]) -> dict[str, str]:
    """Log column -> our field, checked: every target is a field we know and is mapped once."""
    targets: dict[str, str] = {}
    for column, target in pairs.items():
        if target not in FIELDS:
            raise InvalidInputError(
                f"--map {column}={target}: {target!r} is not a field; use one of {', '.join(FIELDS)}"
            )
        if target in targets.values():
            raise InvalidInputError(f"--map: two columns map to {target!r}")
        targets[column] = target
    return targets


def read_log(path: Path, fmt: str, mapping: Mapping[str, str] | None = None) -> Iterator[LogBlock]:
    """The log's rows, block by block, checked; raises InvalidInputError when the log cannot be read at all."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise InvalidInputError(f"traffic log not found: {path}")
    to_field = dict(mapping or {})
    source = {field: field for field in FIELDS}
    for column, field in to_field.items():
        source[field] = column
    if fmt == "parquet":
        return _parquet_blocks(path, source)
    if fmt == "csv":
        return _csv_blocks(path, source)
    return _jsonl_blocks(path, source)


def _check_columns(columns: list[str], source: Mapping[str, str], where: str) -> None:
    present = set(columns)
    missing = [f"{field} (column {source[field]!r})" for field in REQUIRED if source[field] not in present]
    if missing:
        raise InvalidInputError(f"{where} has no {', '.join(missing)}; name the column with --map column=field")
    if source["blocked"] not in present and source["latency_budget_s"] not in present:
        raise InvalidInputError(
            f"{where} has neither a blocked flag ({source['blocked']!r}) nor a latency budget "
            f"({source['latency_budget_s']!r}); name one with --map column=field"
        )


def _chunks(path: Path) -> Iterator[tuple[int, bytes]]:
    """(first line number, bytes) pieces of the file cut at line ends."""
    line = 1
    rest = b""
    with path.open("rb") as handle:
        while True:
            data = handle.read(BLOCK_BYTES)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            piece, rest = data[: cut + 1], data[cut + 1 :]
            yield line, piece
            line += piece.count(b"\n")
    if rest.strip():
        yield line, rest + b"\n"


def _jsonl_blocks(path: Path, source: Mapping[str, str]) -> Iterator[LogBlock]:
    schema = pa.schema([(source[field], _JSON_TYPES[field]) for field in FIELDS])
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    checked = False
    for first_line, piece in _chunks(path):
        if not checked:
            _check_columns(_first_json_keys(piece), source, f"the first row of {path.name}")
            checked = True
        yield from _split_on_failure(
            piece, first_line, lambda p, f: _jsonl_fast(p, f, source, options), source, _jsonl_slow
        )
    if not checked:
        raise InvalidInputError(f"the traffic log {path} is empty")


def _jsonl_fast(
    piece: bytes, first_line: int, source: Mapping[str, str], options: pa_json.ParseOptions
) -> LogBlock | None:
    lines = piece.count(b"\n")
    try:
        table = pa_json.read_json(io.BytesIO(piece), parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if table.num_rows != lines:
        return None  # a blank line: the row numbers would no longer be line numbers
    raw = {field: table.column(source[field]) for field in FIELDS}
    return clean_block(raw, pa.array(np.arange(first_line, first_line + lines, dtype=np.int64)), [])


# A piece Arrow cannot parse is halved until it parses or is this small; then it goes line by line.
# So one bad line costs about two parses of its block, not a slow pass over 60,000 rows.
_SLOW_PATH_LINES = 512


def _split_on_failure(
    piece: bytes,
    first_line: int,
    fast: Callable[[bytes, int], LogBlock | None],
    source: Mapping[str, str],
    slow: Callable[[bytes, int, Mapping[str, str]], LogBlock],
) -> Iterator[LogBlock]:
    block = fast(piece, first_line)
    if block is not None:
        yield block
        return
    lines = piece.count(b"\n")
    if lines <= _SLOW_PATH_LINES:
        yield slow(piece, first_line, source)
        return
    # The piece ends with a line end and holds more than one line, so the cut is strictly inside it.
    middle = piece.index(b"\n", len(piece) // 2 - 1) + 1
    if middle >= len(piece):
        middle = piece.rindex(b"\n", 0, len(piece) - 1) + 1
    head, tail = piece[:middle], piece[middle:]
    yield from _split_on_failure(head, first_line, fast, source, slow)
    yield from _split_on_failure(tail, first_line + head.count(b"\n"), fast, source, slow)


def _first_json_keys(piece: bytes) -> list[str]:
    for line in piece[:65_536].splitlines():
        if line.strip():
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                return list(FIELDS)  # the line is reported as bad; the columns are judged by the rest
            return list(value) if isinstance(value, dict) else list(FIELDS)
    return []


def _text(value: object) -> str | None:
    """A JSON scalar as the text a CSV cell would hold; containers are not scalars."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise ValueError("is not a single value")
    return str(value)


def _jsonl_slow(piece: bytes, first_line: int, source: Mapping[str, str]) -> LogBlock:
    columns: dict[str, list[str | None]] = {field: [] for field in FIELDS}
    numbers: list[int] = []
    bad: list[BadRow] = []
    for offset, line in enumerate(piece.split(b"\n")[:-1]):
        number = first_line + offset
        if not line.strip():
            continue  # a blank line is not a call
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            bad.append(BadRow(number, f"not valid JSON ({exc})"))
            continue
        if not isinstance(value, dict):
            bad.append(BadRow(number, "not a JSON object"))
            continue
        try:
            row = {field: _text(value.get(source[field])) for field in FIELDS}
        except ValueError:
            wrong = next(f for f in FIELDS if isinstance(value.get(source[f]), (dict, list)))
            bad.append(BadRow(number, f"{wrong} is not a single value"))
            continue
        for field in FIELDS:
            columns[field].append(row[field])
        numbers.append(number)
    raw = {field: pa.array(columns[field], type=pa.string()) for field in FIELDS}
    return clean_block(raw, pa.array(numbers, type=pa.int64()), bad)


def _csv_blocks(path: Path, source: Mapping[str, str]) -> Iterator[LogBlock]:
    chunks = _chunks(path)
    try:
        _, head = next(chunks)
    except StopIteration:
        raise InvalidInputError(f"the traffic log {path} is empty") from None
    header_line, _, body = head.partition(b"\n")
    header = next(csv.reader([header_line.decode("utf-8", errors="replace")]))
    _check_columns(header, source, f"the header of {path.name}")
    wanted = {source[field] for field in FIELDS} & set(header)

    def blocks() -> Iterator[tuple[int, bytes]]:
        if body:
            yield 2, body
        yield from chunks

    def fast(piece: bytes, first_line: int) -> LogBlock | None:
        return _csv_fast(piece, first_line, header, wanted, source)

    def slow(piece: bytes, first_line: int, source: Mapping[str, str]) -> LogBlock:
        return _csv_slow(piece, first_line, header, source)

    for first_line, piece in blocks():
        yield from _split_on_failure(piece, first_line, fast, source, slow)


def _csv_fast(
    piece: bytes, first_line: int, header: list[str], wanted: set[str], source: Mapping[str, str]
) -> LogBlock | None:
    lines = piece.count(b"\n")
    invalid: list[int] = []

    def note(_row: object) -> str:
        invalid.append(1)
        return "skip"

    try:
        table = pa_csv.read_csv(
            io.BytesIO(piece),
            read_options=pa_csv.ReadOptions(column_names=header, use_threads=False),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=note, newlines_in_values=False),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                include_columns=sorted(wanted),
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    if invalid or table.num_rows != lines:
        return None
    raw = {field: _column_or_nulls(table, source[field]) for field in FIELDS}
    return clean_block(raw, pa.array(np.arange(first_line, first_line + lines, dtype=np.int64)), [])


def _csv_slow(piece: bytes, first_line: int, header: list[str], source: Mapping[str, str]) -> LogBlock:
    index = {name: i for i, name in enumerate(header)}
    columns: dict[str, list[str | None]] = {field: [] for field in FIELDS}
    numbers: list[int] = []
    bad: list[BadRow] = []
    text = piece.decode("utf-8", errors="replace").split("\n")[:-1]
    for offset, line in enumerate(text):
        number = first_line + offset
        if not line.strip():
            continue
        cells = next(csv.reader([line]))
        if len(cells) != len(header):
            bad.append(BadRow(number, f"{len(cells)} columns where the header has {len(header)}"))
            continue
        for field in FIELDS:
            position = index.get(source[field])
            cell = cells[position] if position is not None else None
            columns[field].append(cell if cell not in (None, "") else None)
        numbers.append(number)
    raw = {field: pa.array(columns[field], type=pa.string()) for field in FIELDS}
    return clean_block(raw, pa.array(numbers, type=pa.int64()), bad)


def _parquet_blocks(path: Path, source: Mapping[str, str]) -> Iterator[LogBlock]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(f"{path} is not a Parquet file: {exc}") from None
    names = parquet.schema_arrow.names
    _check_columns(names, source, path.name)
    wanted = sorted({source[field] for field in FIELDS} & set(names))
    first = 1
    for batch in parquet.iter_batches(batch_size=65_536, columns=wanted):
        table = pa.Table.from_batches([batch])
        numbers = pa.array(np.arange(first, first + table.num_rows, dtype=np.int64))
        first += table.num_rows
        yield clean_block({field: _column_or_nulls(table, source[field]) for field in FIELDS}, numbers, [])


def _column_or_nulls(table: pa.Table, name: str) -> pa.ChunkedArray | pa.Array:
    if name in table.column_names:
        return table.column(name)
    return pa.nulls(table.num_rows, pa.string())


def ledger_log(ledger: Ledger) -> Iterator[LogBlock]:
    """The ledger's closed attempts as a traffic log: tag = the workload (job), the lane each ran on.

    Nothing in the ledger blocked a caller (interactive router calls are not recorded there); an
    item's deadline, counted from when the attempt was opened, is its latency budget. Line numbers
    are attempt numbers in time order, from 1.
    """
    first = 1
    for rows in ledger.attempt_log():
        job, model, lane, opened, deadline, input_tokens, cached, output = (list(column) for column in zip(*rows))
        budgets = [None if due is None else (due - start).total_seconds() for start, due in zip(opened, deadline)]
        raw = {
            "time": pa.array(opened, pa.timestamp("us", tz="UTC")),
            "model": pa.array(model, pa.string()),
            "input_tokens": pa.array(input_tokens, pa.int64()),
            "cached_input_tokens": pa.array(cached, pa.int64()),
            "output_tokens": pa.array(output, pa.int64()),
            "blocked": pa.array([False] * len(rows), pa.bool_()),
            "latency_budget_s": pa.array(budgets, pa.float64()),
            "chain_id": pa.nulls(len(rows), pa.string()),
            "chain_step": pa.nulls(len(rows), pa.int64()),
            "tag": pa.array(job, pa.string()),
            "lane": pa.array(lane, pa.string()),
        }
        yield clean_block(raw, pa.array(np.arange(first, first + len(rows), dtype=np.int64)), [])
        first += len(rows)
