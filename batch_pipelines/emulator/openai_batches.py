"""OpenAI Batch API: validation, lazy bulk processing on the virtual clock, output files.

A batch's timeline is fixed when it is created (seeded by the profile): validation ends at
``created + validation_seconds``; lines then complete in proportion to elapsed virtual time
over the batch's duration; finalizing and completion follow. Nothing runs in the background:
when a batch is read or listed, the lines its timeline says are done by "now" are answered in
one bulk pass and appended to its output and error work files. So a test that moves the clock
24 hours gets the same files as one that watched every second, and a million lines cost one
pass each.
"""

from __future__ import annotations

import os
import shutil
from array import array
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from batch_pipelines.emulator import accounting
from batch_pipelines.emulator.clock import VirtualClock
from batch_pipelines.emulator.errors import ApiError
from batch_pipelines.emulator.faults import LineDraws, uniforms, weighted_choice
from batch_pipelines.emulator.openai_files import OpenAIFiles
from batch_pipelines.emulator.profile import Profile
from batch_pipelines.emulator.responses import Responder, UsageTotals
from batch_pipelines.emulator.state import BATCH_ID, FILE_ID, Store

WINDOW_SECONDS = 24 * 3600
MAX_LINES = 50_000
MAX_INPUT_BYTES = 200 * 1024 * 1024
MAX_EMBEDDING_INPUTS = 50_000
MAX_REPORTED_ERRORS = 100
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})

ITEM_ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "invalid_request_400": (
        400,
        {
            "message": "Invalid request (injected by the emulator's fault profile).",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_request",
        },
    ),
    "server_error_500": (
        500,
        {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": "server_error",
        },
    ),
    "rate_limited_429": (
        429,
        {
            "message": "Rate limit reached for requests (injected by the emulator's fault profile).",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
    ),
}
EXPIRED_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
_MALFORMED_TAIL = 40  # bytes of a good line kept when writing a deliberately broken one


def not_found(batch_id: str) -> ApiError:
    return ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")


def _line_ids(draws: LineDraws, index: int) -> tuple[str, str]:
    stem = draws.draw(index)[3]
    return f"batch_req_{stem:032x}", f"req_{stem & 0xFFFFFFFFFFFFFFFF:016x}"


class OpenAIBatches:
    def __init__(
        self,
        store: Store,
        clock: VirtualClock,
        files: OpenAIFiles,
        responder: Responder,
        profile: Callable[[], Profile],
    ) -> None:
        self.store = store
        self.clock = clock
        self.files = files
        self.responder = responder
        self.profile = profile

    # -- API ------------------------------------------------------------------------------

    def create(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        input_file_id = payload.get("input_file_id")
        endpoint = payload.get("endpoint")
        window = payload.get("completion_window")
        metadata = payload.get("metadata")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise ApiError(
                400,
                "Missing required parameter: 'input_file_id'.",
                param="input_file_id",
                code="missing_required_parameter",
            )
        if endpoint not in ENDPOINTS:
            raise ApiError(
                400,
                f"Invalid 'endpoint': {endpoint!r}; the emulator supports {', '.join(ENDPOINTS)}.",
                param="endpoint",
                code="invalid_value",
            )
        if window != "24h":
            raise ApiError(
                400,
                f"Invalid 'completion_window': {window!r}; only '24h' is supported.",
                param="completion_window",
                code="invalid_value",
            )
        _check_metadata(metadata)
        if not FILE_ID.match(input_file_id) or input_file_id not in self.store.files:
            raise ApiError(400, f"No such File object: {input_file_id}", param="input_file_id", code="invalid_value")
        file_record = self.store.files[input_file_id]
        if file_record["purpose"] != "batch":
            raise ApiError(
                400,
                f"File {input_file_id} has purpose '{file_record['purpose']}'; a batch input needs purpose 'batch'.",
                param="input_file_id",
                code="invalid_value",
            )
        profile = self.profile()
        with self.store.lock:
            batch_id, seq = self.store.new_id("batch_", 32)
            work = self.store.batch_dir(batch_id)
            _link_or_copy(self.store.file_data_path(input_file_id), work / "input.jsonl")
            now = self.clock.now()
            u = uniforms(profile.seed, "batch", seq)
            span = profile.batch_completion_seconds
            record = {
                "id": batch_id,
                "seq": seq,
                "endpoint": endpoint,
                "input_file_id": input_file_id,
                "completion_window": "24h",
                "metadata": dict(metadata) if metadata else None,
                "created_at": now,
                "profile": profile.to_dict(),
                "plan": {
                    "duration": span.min + u[0] * (span.max - span.min),
                    "expires": profile.never_complete or u[1] < profile.expire_rate,
                },
                "status": "validating",
                "model": None,
                "errors": None,
                "total": 0,
                "processed": 0,
                "completed": 0,
                "failed": 0,
                "offset": 0,
                "usage": UsageTotals().to_dict(),
                "enqueued_tokens": 0,
                "malformed_left": profile.malformed_output_lines,
                "output_file_id": None,
                "error_file_id": None,
            }
            for stamp in (
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            ):
                record[stamp] = None
            self.store.save_batch(record)
            self.store.count_created("openai")
            return self.render(record)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        with self.store.lock:
            record = self._record(batch_id)
            self.refresh(record)
            return self.render(record)

    def list(self, *, after: str | None, limit: int) -> dict[str, Any]:
        with self.store.lock:
            records = sorted(self.store.batches.values(), key=lambda r: r["seq"], reverse=True)
            if after:
                ids = [r["id"] for r in records]
                records = records[ids.index(after) + 1 :] if after in ids else []
            page = records[:limit]
            for record in page:
                self.refresh(record)
            data = [self.render(r) for r in page]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(records) > limit,
        }

    def cancel(self, batch_id: str) -> dict[str, Any]:
        with self.store.lock:
            record = self._record(batch_id)
            self.refresh(record)
            if record["status"] in ("cancelling", "cancelled"):
                return self.render(record)
            if record["status"] not in ("validating", "in_progress"):
                raise ApiError(400, f"Cannot cancel a batch with status '{record['status']}'.", param="batch_id")
            record["status"] = "cancelling"
            record["cancelling_at"] = self.clock.now()
            self.store.save_batch(record)
            self.refresh(record)
            return self.render(record)

    def enqueued_tokens(self) -> dict[str, int]:
        now = self.clock.now()
        totals: dict[str, int] = {}
        with self.store.lock:
            for record in self.store.batches.values():
                if _holds_queue(record, now):
                    totals[record["model"]] = totals.get(record["model"], 0) + record["enqueued_tokens"]
        return totals

    # -- timeline -------------------------------------------------------------------------

    def _record(self, batch_id: str) -> dict[str, Any]:
        if not BATCH_ID.match(batch_id) or batch_id not in self.store.batches:
            raise not_found(batch_id)
        return self.store.batches[batch_id]

    def refresh(self, record: dict[str, Any]) -> None:
        """Bring one batch up to the clock: validate, answer due lines, move its status."""
        if record["status"] in TERMINAL:
            return
        now = self.clock.now()
        self._settle_validations(now)
        if record["status"] in TERMINAL:
            return
        profile = record["profile"]
        if record["status"] == "cancelling":
            if record["in_progress_at"] is not None:
                self._process_until(record, min(now, record["cancelling_at"]))
            cancelled_at = record["cancelling_at"] + profile["cancel_seconds"]
            if now >= cancelled_at:
                self._finish(record, "cancelled", cancelled_at)
            self.store.save_batch(record)
            return
        if record["status"] == "validating":
            return
        started = record["in_progress_at"]
        expires_at = record["created_at"] + WINDOW_SECONDS
        duration, expiring = _effective_duration(record)
        if expiring:
            if now >= expires_at:
                self._process_until(record, expires_at)
                self._expire_rest(record)
                self._finish(record, "expired", expires_at)
            else:
                self._process_until(record, now)
        else:
            run_end = started + duration
            self._process_until(record, min(now, run_end))
            if now >= run_end:
                record["status"] = "finalizing"
                record["finalizing_at"] = run_end
                completed_at = run_end + profile["finalizing_seconds"]
                if now >= completed_at:
                    self._finish(record, "completed", completed_at)
        self.store.save_batch(record)

    def _settle_validations(self, now: float) -> None:
        # Validate every batch whose validation ended by now, in timeline order, so each
        # enqueued-token check sees exactly the batches admitted before it.
        due = [
            r
            for r in self.store.batches.values()
            if r["status"] == "validating" and r["created_at"] + r["profile"]["validation_seconds"] <= now
        ]
        for record in sorted(due, key=lambda r: (r["created_at"] + r["profile"]["validation_seconds"], r["seq"])):
            self._validate(record, record["created_at"] + record["profile"]["validation_seconds"])
            self.store.save_batch(record)
        cancelling = [
            r for r in self.store.batches.values() if r["status"] == "cancelling" and r["in_progress_at"] is None
        ]
        for record in cancelling:
            cancelled_at = record["cancelling_at"] + record["profile"]["cancel_seconds"]
            if now >= cancelled_at:
                self._finish(record, "cancelled", cancelled_at)
                self.store.save_batch(record)

    def _validate(self, record: dict[str, Any], at: float) -> None:
        """One pass over the input: check every line and, while no line is wrong, answer it.

        Answers are computed here, once per line, into pending work files (output lines and
        error lines) with a per-line table of kind, size and usage. Processing
        later only moves counters and offsets through that table, so progress is cheap to
        report and the output file at the end is the pending file cut at the right offset.
        """
        work = self.store.batch_dir(record["id"])
        path = work / "input.jsonl"
        errors: list[dict[str, Any]] = []

        def fail(code: str, message: str, line: int | None = None, param: str | None = None) -> None:
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append({"code": code, "message": message, "param": param, "line": line})

        size = path.stat().st_size
        endpoint = record["endpoint"]
        writer = _PendingWriter(work)
        answerer = _LineAnswerer(self.responder, record, writer)
        model: str | None = None
        embedding_inputs = 0
        count = 0
        if size > MAX_INPUT_BYTES:
            fail("file_too_large", f"The input file is {size} bytes; the limit is {MAX_INPUT_BYTES} bytes.")
        else:
            seen: set[str] = set()
            loads = orjson.loads
            with open(path, "rb") as source:
                for number, raw in enumerate(source, 1):
                    if not raw.strip():
                        continue
                    if count >= MAX_LINES:
                        fail("too_many_requests", f"The input file holds more than {MAX_LINES} requests.", number)
                        break
                    count += 1
                    try:
                        line = loads(raw)
                    except orjson.JSONDecodeError:
                        fail("invalid_json_line", f"Line {number} is not valid JSON.", number)
                        continue
                    if not isinstance(line, dict):
                        fail("invalid_json_line", f"Line {number} is not a JSON object.", number)
                        continue
                    custom_id = line.get("custom_id")
                    body = line.get("body")
                    line_ok = True
                    if not isinstance(custom_id, str) or not custom_id:
                        fail("missing_required_parameter", f"Line {number} has no custom_id.", number, "custom_id")
                        line_ok = False
                    elif custom_id in seen:
                        fail(
                            "duplicate_custom_id",
                            f"The custom_id '{custom_id}' on line {number} is used more than once.",
                            number,
                            "custom_id",
                        )
                        line_ok = False
                    else:
                        seen.add(custom_id)
                    if line.get("method") != "POST":
                        fail("invalid_method", f"Line {number}: method must be 'POST'.", number, "method")
                        line_ok = False
                    if line.get("url") != endpoint:
                        fail(
                            "invalid_url",
                            f"Line {number}: url {line.get('url')!r} does not match the batch endpoint {endpoint!r}.",
                            number,
                            "url",
                        )
                        line_ok = False
                    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                        fail(
                            "missing_required_parameter",
                            f"Line {number} has no body with a model.",
                            number,
                            "body.model",
                        )
                        continue
                    if model is None:
                        model = body["model"]
                    elif body["model"] != model:
                        fail(
                            "mixed_models",
                            f"Line {number} uses model {body['model']!r}; this batch uses {model!r}. One model "
                            "per batch.",
                            number,
                            "body.model",
                        )
                        line_ok = False
                    if endpoint == "/v1/embeddings":
                        embedding_inputs += _embedding_input_count(body)
                    if line_ok and not errors and isinstance(custom_id, str):
                        answerer.answer(custom_id, body)
            if count == 0 and not errors:
                fail("empty_file", "The input file holds no requests.")
            if embedding_inputs > MAX_EMBEDDING_INPUTS:
                fail(
                    "too_many_embedding_inputs",
                    f"The batch holds {embedding_inputs} embedding inputs; the limit is {MAX_EMBEDDING_INPUTS}.",
                )
        writer.close()
        record["model"] = model
        if errors:
            _remove_work(work)
            record["status"] = "failed"
            record["failed_at"] = at
            record["errors"] = {"object": "list", "data": errors}
            return
        tokens = answerer.prompt_tokens
        limit = record["profile"]["enqueued_token_limits"].get(model)
        if limit is not None:
            queued = sum(
                r["enqueued_tokens"]
                for r in self.store.batches.values()
                if r is not record and r["model"] == model and _holds_queue(r, at)
            )
            if queued + tokens > limit:
                _remove_work(work)
                record["status"] = "failed"
                record["failed_at"] = at
                record["errors"] = {
                    "object": "list",
                    "data": [
                        {
                            "code": "token_limit_exceeded",
                            "message": (
                                f"Enqueued token limit reached for {model}. Limit: {limit:,} enqueued tokens; "
                                f"{queued:,} already enqueued, this batch needs {tokens:,}. Try again once some "
                                "in_progress batches have been completed."
                            ),
                            "param": None,
                            "line": None,
                        }
                    ],
                }
                return
        writer.save_table()
        record["status"] = "in_progress"
        record["in_progress_at"] = at
        record["total"] = count
        record["enqueued_tokens"] = tokens
        record["pending"] = {"output": 0, "errors": 0}

    def _target(self, record: dict[str, Any], at: float) -> int:
        duration, _ = _effective_duration(record)
        if duration == float("inf"):
            return 0
        # Compare end times the way refresh computes them (start + duration): the difference
        # at - start can fall a hair short of duration in floating point and lose the last line.
        if at >= record["in_progress_at"] + duration:
            total: int = record["total"]
            return total
        elapsed = at - record["in_progress_at"]
        return max(0, int(record["total"] * elapsed / duration + 1e-9))  # float noise must not lose a line

    def _process_until(self, record: dict[str, Any], at: float) -> None:
        """Count lines [processed, target) as done: counters, usage and pending offsets."""
        target = self._target(record, at)
        start = record["processed"]
        if target <= start:
            return
        rows = np.frombuffer((self.store.batch_dir(record["id"]) / "lines.table").read_bytes(), dtype=np.uint32)
        rows = rows.reshape(-1, _ROW)[start:target].astype(np.uint64)
        kinds = rows[:, 0]
        errors = kinds == _ERROR
        outputs = (kinds != _ERROR) & (kinds != _EXPIRED)
        usage = record["usage"]
        pending = record["pending"]
        pending["errors"] += int(rows[errors, 1].sum())
        pending["output"] += int(rows[outputs, 1].sum())
        usage["input_tokens"] += int(rows[outputs, 2].sum())
        usage["cached_tokens"] += int(rows[outputs, 3].sum())
        usage["output_tokens"] += int(rows[outputs, 4].sum())
        record["completed"] += int(outputs.sum())
        record["failed"] += int(errors.sum())
        record["processed"] = target

    def _expire_rest(self, record: dict[str, Any]) -> None:
        """Lines that never ran go to the error file as ``batch_expired``."""
        work = self.store.batch_dir(record["id"])
        lines: list[bytes] = []
        index = 0
        draws = LineDraws(record["profile"]["seed"], "line", record["seq"])
        with open(work / "input.jsonl", "rb") as source:
            for raw in source:
                if not raw.strip():
                    continue
                if index >= record["processed"]:
                    line_id, _ = _line_ids(draws, index)
                    custom_id = orjson.loads(raw)["custom_id"]
                    lines.append(
                        orjson.dumps({"id": line_id, "custom_id": custom_id, "response": None, "error": EXPIRED_ERROR})
                    )
                index += 1
        record["expired_lines"] = len(lines)
        with open(work / "expired.pending", "wb") as out:
            out.write(b"\n".join(lines) + b"\n" if lines else b"")

    def _finish(self, record: dict[str, Any], status: str, at: float) -> None:
        work = self.store.batch_dir(record["id"])
        record["status"] = status
        record[f"{status}_at"] = at
        pending = record.get("pending") or {"output": 0, "errors": 0}
        output = work / "output.pending"
        errors = work / "errors.pending"
        for path, keep in ((output, pending["output"]), (errors, pending["errors"])):
            if path.exists():
                os.truncate(path, keep)
        if (work / "expired.pending").exists():
            with open(errors, "ab") as out, open(work / "expired.pending", "rb") as source:
                shutil.copyfileobj(source, out)
        for path, key, suffix in ((output, "output_file_id", "output"), (errors, "error_file_id", "error")):
            if path.exists() and path.stat().st_size > 0:
                record[key] = self.files.adopt(path, filename=f"{record['id']}_{suffix}.jsonl", purpose="batch_output")[
                    "id"
                ]
        _remove_work(work)

    # -- wire shape -----------------------------------------------------------------------

    @staticmethod
    def render(record: dict[str, Any]) -> dict[str, Any]:
        def stamp(key: str) -> int | None:
            value = record[key]
            return None if value is None else int(value)

        usage = record["usage"]
        return {
            "id": record["id"],
            "object": "batch",
            "endpoint": record["endpoint"],
            "model": record["model"],
            "errors": record["errors"],
            "input_file_id": record["input_file_id"],
            "completion_window": record["completion_window"],
            "status": record["status"],
            "output_file_id": record["output_file_id"],
            "error_file_id": record["error_file_id"],
            "created_at": int(record["created_at"]),
            "in_progress_at": stamp("in_progress_at"),
            "expires_at": int(record["created_at"] + WINDOW_SECONDS),
            "finalizing_at": stamp("finalizing_at"),
            "completed_at": stamp("completed_at"),
            "failed_at": stamp("failed_at"),
            "expired_at": stamp("expired_at"),
            "cancelling_at": stamp("cancelling_at"),
            "cancelled_at": stamp("cancelled_at"),
            "request_counts": {"total": record["total"], "completed": record["completed"], "failed": record["failed"]},
            "metadata": record["metadata"],
            "usage": {
                "input_tokens": usage["input_tokens"],
                "input_tokens_details": {"cached_tokens": usage["cached_tokens"]},
                "output_tokens": usage["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": usage["reasoning_tokens"]},
                "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            },
        }


def _effective_duration(record: dict[str, Any]) -> tuple[float, bool]:
    """How long the lines take to run, and whether the batch runs out of window first.

    A batch chosen to expire finishes ``1 - unfinished_at_expiry`` of its lines by the end of
    the window; a batch whose drawn duration overruns the window expires the same way.
    """
    started = record["in_progress_at"]
    window_left = record["created_at"] + WINDOW_SECONDS - started
    if record["plan"]["expires"]:
        done_fraction = 1.0 - record["profile"]["unfinished_at_expiry"]
        return (window_left / done_fraction if done_fraction > 0 else float("inf")), True
    duration = record["plan"]["duration"]
    return duration, duration > window_left


def _end_time(record: dict[str, Any]) -> float:
    ended: float
    for key in ("completed_at", "failed_at", "expired_at", "cancelled_at"):
        if record[key] is not None:
            ended = record[key]
            return ended
    if record["cancelling_at"] is not None:
        ended = record["cancelling_at"] + record["profile"]["cancel_seconds"]
        return ended
    duration, expiring = _effective_duration(record)
    if expiring:
        ended = record["created_at"] + WINDOW_SECONDS
        return ended
    ended = record["in_progress_at"] + duration + record["profile"]["finalizing_seconds"]
    return ended


def _holds_queue(record: dict[str, Any], at: float) -> bool:
    """Whether a batch's tokens count against its model's enqueued-token limit at ``at``."""
    started = record["in_progress_at"]
    return started is not None and started <= at < _end_time(record)


def _embedding_input_count(body: dict[str, Any]) -> int:
    value = body.get("input")
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise ApiError(
            400,
            "Invalid 'metadata': expected an object of string keys and values.",
            param="metadata",
            code="invalid_type",
        )
    if len(metadata) > 16:
        raise ApiError(
            400, f"Invalid 'metadata': {len(metadata)} pairs; at most 16.", param="metadata", code="invalid_value"
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise ApiError(
                400,
                f"Invalid 'metadata': key {key[:20]!r}... is longer than 64 characters.",
                param="metadata",
                code="invalid_value",
            )
        if not isinstance(value, str) or len(value) > 512:
            raise ApiError(
                400,
                f"Invalid 'metadata': the value of {key!r} must be a string of at most 512 characters.",
                param="metadata",
                code="invalid_value",
            )


def _link_or_copy(source: Any, target: Any) -> None:
    # A hard link keeps the input readable even if the client deletes the file mid-batch.
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _remove_work(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)


# Per-line table, ``_ROW`` unsigned ints per line: kind, bytes in its pending file, prompt,
# cached and completion tokens.
_ROW = 5
_OUTPUT, _ERROR, _MISSING, _EXPIRED = 0, 1, 2, 3
_FLUSH_LINES = 4096
_DRAW_BLOCK = 4096  # lines whose seeded draws are computed together
_WRITES_IN_FLIGHT = 4  # joined blocks (a few MB each) queued for the writer thread


class _PendingWriter:
    """Appends precomputed lines to the pending work files in large writes.

    The writes run on a helper thread: copying tens of megabytes into the page cache is
    kernel time that needs no GIL, so it overlaps with answering the next lines instead of
    adding to it. At most ``_WRITES_IN_FLIGHT`` blocks wait, and one thread keeps them in order.
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.table = array("I")
        self._buffers: dict[str, list[bytes]] = {"output": [], "errors": []}
        self._files = {name: open(work / f"{name}.pending", "wb") for name in self._buffers}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emulator-pending-writer")
        self._in_flight: deque[Future[int]] = deque()

    def add(
        self, stream: str, kind: int, line: bytes | None, prompt: int = 0, cached: int = 0, completion: int = 0
    ) -> None:
        size = 0
        if line is not None:
            size = len(line) + 1
            buffer = self._buffers[stream]
            buffer.append(line)
            if len(buffer) >= _FLUSH_LINES:
                self._flush(stream)
        self.table.extend((kind, size, prompt, cached, completion))

    def _flush(self, stream: str) -> None:
        buffer = self._buffers[stream]
        if buffer:
            buffer.append(b"")  # the last line's newline, without copying the joined block again
            block = b"\n".join(buffer)
            buffer.clear()
            while len(self._in_flight) >= _WRITES_IN_FLIGHT:
                self._in_flight.popleft().result()  # re-raises a failed write here
            self._in_flight.append(self._pool.submit(self._files[stream].write, block))

    def close(self) -> None:
        try:
            for stream in self._files:
                self._flush(stream)
            while self._in_flight:
                self._in_flight.popleft().result()
        finally:
            self._pool.shutdown(wait=True)
            for handle in self._files.values():
                handle.close()

    def save_table(self) -> None:
        (self.work / "lines.table").write_bytes(self.table.tobytes())


class _LineAnswerer:
    """Decides each line's fate (seeded faults) and writes its output or error line."""

    def __init__(self, responder: Responder, record: dict[str, Any], writer: _PendingWriter) -> None:
        self.responder = responder
        self.writer = writer
        self.profile = Profile.from_mapping(record["profile"])
        self.batch_id = record["id"]
        self.draws = LineDraws(self.profile.seed, "line", record["seq"])
        self.endpoint = record["endpoint"]
        self.created = record["created_at"] + self.profile.validation_seconds
        self.error_rate = 1.0 if self.profile.all_lines_fail else self.profile.item_error_rate
        self.malformed_left = self.profile.malformed_output_lines
        self.created_stamp = int(self.created)
        self.index = 0
        self._block = self.draws.block(0, 0)
        self.prompt_tokens = 0

    def answer(self, custom_id: str, body: dict[str, Any]) -> None:
        index = self.index
        self.index += 1
        block = self._block
        if index >= block.end:
            block = self._block = self.draws.block(index, _DRAW_BLOCK)
        offset = index - block.start
        at = 16 * offset
        low = block.low[at : at + 16]
        stem = block.high[at : at + 16] + low
        line_id = "batch_req_" + stem
        request_id = "req_" + low
        dumps = orjson.dumps
        profile = self.profile
        if block.u_error[offset] < self.error_rate:
            status, error_body = ITEM_ERRORS[weighted_choice(profile.item_error_kinds, block.u_kind[offset])]
            line = {
                "id": line_id,
                "custom_id": custom_id,
                "response": {"status_code": status, "request_id": request_id, "body": {"error": error_body}},
                "error": None,
            }
            self.writer.add("errors", _ERROR, dumps(line))
            self._count_prompt(body)
            return
        if block.u_missing[offset] < profile.missing_line_rate:
            self.writer.add("output", _MISSING, None)
            self._count_prompt(body)
            return
        try:
            if self.endpoint == "/v1/embeddings":
                response, usage = self.responder.embeddings(body)
            else:
                response, usage = self.responder.chat_completion(
                    body, profile=profile, key=custom_id, completion_id="chatcmpl-" + stem, created=self.created_stamp
                )
        except ApiError as exc:
            error_body = {"message": exc.message, "type": "invalid_request_error", "param": exc.param, "code": exc.code}
            line = {
                "id": line_id,
                "custom_id": custom_id,
                "response": {"status_code": exc.status, "request_id": request_id, "body": {"error": error_body}},
                "error": None,
            }
            self.writer.add("errors", _ERROR, dumps(line))
            return
        self.prompt_tokens += usage.input_tokens
        encoded = dumps(
            {
                "id": line_id,
                "custom_id": custom_id,
                "response": {"status_code": 200, "request_id": request_id, "body": response},
                "error": None,
            }
        )
        if self.malformed_left > 0:
            self.malformed_left -= 1
            encoded = encoded[: max(1, len(encoded) - _MALFORMED_TAIL)]
        self.writer.add("output", _OUTPUT, encoded, usage.input_tokens, usage.cached_tokens, usage.output_tokens)

    def _count_prompt(self, body: dict[str, Any]) -> None:
        if self.endpoint == "/v1/embeddings":
            self.prompt_tokens += accounting.embedding_tokens(body)
        else:
            self.prompt_tokens += accounting.prompt_tokens(body)
