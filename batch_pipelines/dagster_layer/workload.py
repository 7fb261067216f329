"""What a user writes to get a batch workload: a description, not code that polls.

A workload says which upstream asset feeds it, how a row becomes a request body, how a
response becomes result columns, the model, the budget, the minimum success rate and the
deadline. ``batch_workload(...)`` turns it into Dagster definitions.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import tokenize
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import dagster as dg
import numpy as np
import orjson
import pandas as pd

from batch_pipelines.core.errors import InvalidInputError, InvalidOutput
from batch_pipelines.core.requests import CUSTOM_ID_PATTERN, Endpoint, Lane, LLMRequest

__all__ = ["BatchWorkload", "InvalidOutput", "custom_id_for"]  # InvalidOutput lives in core.errors

DEFAULT_SUBMIT_RETRY_POLICY = dg.RetryPolicy(
    max_retries=3, delay=60, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

_UNSAFE_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass(frozen=True)
class BatchWorkload:
    """A partitioned LLM workload that runs on the batch lane (see README: "Add your own workload")."""

    name: str
    upstream: dg.AssetKey | str | dg.AssetsDefinition
    partitions_def: dg.PartitionsDefinition
    model: str
    build_request: Callable[[Mapping[str, Any]], dict[str, Any]]  # row -> request body (model is added)
    parse_response: Callable[[dict[str, Any]], Mapping[str, Any]]  # response body -> result columns
    endpoint: Endpoint = Endpoint.CHAT
    id_column: str = "id"
    required_columns: Sequence[str] = ()
    budget_usd: Decimal | None = None
    min_success_rate: float = 0.95
    deadline: timedelta = timedelta(hours=30)  # from submission
    expected_output_tokens: int = 256  # for the pre-flight estimate when the body sets no cap
    vector_column: str | None = None  # a list[float] result column written as fixed-size float32
    downstream: Sequence[dg.AssetKey] = field(default_factory=tuple)  # run with the results, gated by its checks
    summarize: Callable[[pd.DataFrame], Mapping[str, Any]] | None = None  # extra metadata from the result table
    # Dagster's retry of the submit asset after a transient provider failure (a 5xx, a lost
    # answer); the resumed submit re-attaches to what exists, so a retry never pays twice.
    # Config, input and budget failures are never retried. None: no retries.
    submit_retry_policy: dg.RetryPolicy | None = field(default_factory=lambda: DEFAULT_SUBMIT_RETRY_POLICY)
    group_name: str | None = None
    description: str | None = None  # shown on both assets in the UI, above what they do
    owners: Sequence[str] = ()  # Dagster asset owners: "team:ml" or an email
    tags: Mapping[str, str] = field(default_factory=dict)  # Dagster asset tags
    # None: derived from the model, the endpoint and the code of build_request/parse_response,
    # so the results go stale in the UI when the prompt or the model changes.
    code_version: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise dg.DagsterInvalidDefinitionError(f"workload name {self.name!r} must be snake_case")
        if not 0.0 <= self.min_success_rate <= 1.0:
            raise dg.DagsterInvalidDefinitionError(
                f"workload {self.name!r}: min_success_rate must be in [0, 1], got {self.min_success_rate}"
            )
        if self.budget_usd is not None and Decimal(self.budget_usd) < 0:
            raise dg.DagsterInvalidDefinitionError(f"workload {self.name!r}: budget_usd must not be negative")
        if self.deadline <= timedelta(0):
            raise dg.DagsterInvalidDefinitionError(f"workload {self.name!r}: deadline must be positive")

    @property
    def provider_kind(self) -> str:
        """The vendor whose model this is, as a Dagster kind: ``openai``, ``anthropic`` or ``gemini``.

        A label from the model's family (where the model is served is the resource's choice).
        """
        if self.model.startswith("claude-"):
            return "anthropic"
        if self.model.startswith("gemini-"):
            return "gemini"
        return "openai"

    @property
    def resolved_code_version(self) -> str:
        """``code_version``, or a digest of the model, the endpoint and the request/response code."""
        if self.code_version is not None:
            return self.code_version
        digest = hashlib.sha256(f"{self.model}\0{self.endpoint.value}".encode())
        for fn in (self.build_request, self.parse_response):
            digest.update(b"\0" + _code_fingerprint(fn))
        return digest.hexdigest()[:12]

    @property
    def upstream_key(self) -> dg.AssetKey:
        if isinstance(self.upstream, dg.AssetsDefinition):
            return self.upstream.key
        return dg.AssetKey.from_coercible(self.upstream)

    @property
    def submit_key(self) -> dg.AssetKey:
        return dg.AssetKey(f"{self.name}_batch")

    @property
    def results_key(self) -> dg.AssetKey:
        return dg.AssetKey(f"{self.name}_results")

    def requests_from_frame(
        self, frame: pd.DataFrame, *, partition: str, now: datetime | None = None
    ) -> list[LLMRequest]:
        """Validate the upstream rows and build one request per row; every problem is named."""
        return list(self.request_stream(frame, partition=partition, now=now))

    def request_stream(
        self, frame: pd.DataFrame, *, partition: str, now: datetime | None = None, rows_per_block: int = 10_000
    ) -> RequestStream:
        """Validate the upstream rows now; build the requests each time the result is walked.

        The submit asset walks a partition twice (the estimate, then the submission): holding a
        million requests at once took about a gigabyte, building them again costs seconds.
        """
        if frame is None or len(frame) == 0:
            raise InvalidInputError(
                f"partition {partition!r} of {self.upstream_key.to_user_string()} has no rows: nothing to send",
                partition=partition,
            )
        needed = [self.id_column, *self.required_columns]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise InvalidInputError(
                f"{self.upstream_key.to_user_string()} lacks column(s) {', '.join(missing)}; "
                f"it has {', '.join(map(str, frame.columns))}",
                missing=missing,
            )
        for column in needed:
            _refuse_blank_values(frame, column, self.id_column)
        suspects = _invalid_utf8_cells(frame)
        if suspects:
            self._refuse_unsendable(frame, suspects)
        ids = frame[self.id_column].map(custom_id_for)
        duplicated = ids[ids.duplicated()].unique().tolist()
        if duplicated:
            raise InvalidInputError(
                f"column {self.id_column!r} has duplicate ids ({', '.join(duplicated[:5])}"
                f"{'…' if len(duplicated) > 5 else ''}); every row needs its own id",
                duplicates=len(duplicated),
            )
        deadline = (now or datetime.now(UTC)) + self.deadline
        return RequestStream(self, frame, ids, deadline, rows_per_block)

    def _refuse_unsendable(self, frame: pd.DataFrame, suspects: Mapping[str, np.ndarray]) -> None:
        """Refuse rows whose request cannot be written as JSON because of a column's invalid text.

        Only rows whose request actually carries the bad text are refused: a column that
        ``build_request`` does not read may hold anything.
        """
        for column, mask in suspects.items():
            positions = np.flatnonzero(mask)
            records = cast(list[dict[str, Any]], frame.iloc[positions].to_dict("records"))
            unsendable = np.zeros(len(frame), dtype=bool)
            for position, row in zip(positions, records):
                try:
                    orjson.dumps(self.build_request(row))
                except TypeError:
                    unsendable[position] = True
            if unsendable.any():
                raise InvalidInputError(
                    f"column {column!r} holds text that is not valid UTF-8 (a lone surrogate) in "
                    f"{int(unsendable.sum())} row(s) ({_row_names(frame, unsendable, self.id_column)}); "
                    "nothing was sent",
                    column=column,
                    rows=int(unsendable.sum()),
                )


class RequestStream:
    """A partition's requests, built afresh on every pass, ``rows_per_block`` rows at a time.

    Re-iterable (each ``iter()`` starts again from the first row) and sized, so the estimate and
    the submission can each walk it without the whole partition's requests held at once.
    """

    def __init__(
        self, workload: BatchWorkload, frame: pd.DataFrame, ids: pd.Series, deadline: datetime, rows_per_block: int
    ) -> None:
        self._workload = workload
        self._block = rows_per_block
        self._frame = frame
        self._ids = ids.tolist()
        self._deadline = deadline

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[LLMRequest]:
        w, deadline = self._workload, self._deadline
        for start in range(0, len(self._ids), self._block):
            block = self._frame.iloc[start : start + self._block]
            # pandas types record keys as Hashable; they are the frame's column labels, read by name.
            records = cast(list[dict[str, Any]], block.to_dict("records"))
            for custom_id, row in zip(self._ids[start : start + self._block], records):
                body = dict(w.build_request(row))
                body["model"] = w.model
                yield LLMRequest(custom_id, w.endpoint, w.model, body, Lane.BATCH, deadline)


# Rows named in an error message; the count says how many more there are.
_ROWS_SHOWN = 5


def _row_names(frame: pd.DataFrame, mask: np.ndarray, id_column: str) -> str:
    """'ids t-1, t-7 (and 3 more)' when the id column is usable there, else the frame's row labels."""
    rows = frame[mask]
    usable = id_column in rows.columns and bool(rows[id_column].notna().all())
    labels = [str(v) for v in (rows[id_column] if usable else rows.index)[:_ROWS_SHOWN]]
    more = len(rows) - len(labels)
    what = "ids" if usable else "rows"
    return f"{what} {', '.join(labels)}{f' (and {more} more)' if more else ''}"


def _refuse_blank_values(frame: pd.DataFrame, column: str, id_column: str) -> None:
    """A required column holding None, NaN or an empty string would be sent (and billed) as 'nan' or ''."""
    values = frame[column]
    blank = values.isna().to_numpy(dtype=bool)
    if values.dtype == object or isinstance(values.dtype, pd.StringDtype):
        blank = blank | values.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
    if blank.any():
        raise InvalidInputError(
            f"column {column!r} is empty, None or NaN in {int(blank.sum())} row(s) "
            f"({_row_names(frame, blank, id_column)}); nothing was sent",
            column=column,
            rows=int(blank.sum()),
        )


def _invalid_utf8_cells(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per text column, the rows holding a string that is not valid UTF-8 (a lone surrogate).

    One join-and-encode per column finds out whether any cell is bad; only then are the cells
    looked at one by one, so the usual clean frame costs one C-speed pass.
    """
    found: dict[str, np.ndarray] = {}
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object and not isinstance(values.dtype, pd.StringDtype):
            continue
        try:
            "".join(v for v in values if isinstance(v, str)).encode("utf-8")
        except UnicodeEncodeError:
            found[str(column)] = values.map(_not_utf8).to_numpy(dtype=bool)
    return found


def _not_utf8(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def custom_id_for(value: Any) -> str:
    """A provider-safe custom_id from a row id: unsafe characters become '_', long ids are hashed."""
    text = str(value)
    if CUSTOM_ID_PATTERN.match(text):
        return text
    # The hash keeps distinct ids distinct after the unsafe characters are replaced.
    safe = _UNSAFE_ID_CHARS.sub("_", text)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{safe[:47]}-{digest}" if safe else f"id-{digest}"


def _code_fingerprint(fn: Callable[..., Any]) -> bytes:
    """The function's source (its prompt text included), or its bytecode and constants without one."""
    try:
        return inspect.getsource(fn).encode()
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):  # no file, or code run by exec()
        code = getattr(fn, "__code__", None)
        if not isinstance(code, types.CodeType):  # a callable object: its class stands for it
            return repr(type(fn)).encode()
        return code.co_code + repr(code.co_consts).encode()
