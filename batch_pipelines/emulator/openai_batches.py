"""OpenAI Batch API: validation, lazy bulk processing on the virtual clock, output files.

A batch's timeline is fixed when it is created (seeded by the profile): validation ends at
``created + validation_seconds``; lines then complete in proportion to elapsed virtual time
over the batch's duration; finalizing and completion follow. Every line is checked and
answered once, by a background worker, as soon as the batch is created
(``openai_batch_work``); when a batch is read or listed, the lines its timeline says are done
by "now" are only counted through the per-line table that work left. So a test that moves the
clock 24 hours gets the same files as one that watched every second, and a read stays fast
however many lines are waiting.

Over 450 lines on purpose: one concept, an OpenAI batch's lifecycle on its timeline (create,
validate, admit, progress, expire, finish, render), all transitions of one record; the per-line
work is already in ``openai_batch_work``. Split, one record's state machine would cross modules.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from batch_pipelines.emulator.clock import VirtualClock
from batch_pipelines.emulator.errors import ApiError
from batch_pipelines.emulator.faults import LineDraws, uniforms
from batch_pipelines.emulator.openai_batch_work import (
    _ERROR,
    _EXPIRED,
    _ROW,
    BatchWorker,
    PreparedBatch,
    prepare,
)
from batch_pipelines.emulator.openai_files import OpenAIFiles
from batch_pipelines.emulator.profile import Profile
from batch_pipelines.emulator.responses import Responder, UsageTotals
from batch_pipelines.emulator.state import BATCH_ID, FILE_ID, Store

WINDOW_SECONDS = 24 * 3600
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# How long one read may wait for batches' work (openai_batch_work) before it answers with
# what is done: far inside any client's timeout and Dagster's 60 s sensor limit, and long
# enough that a test-sized batch is always done by the read that follows its creation.
READ_WAIT_SECONDS = 10.0
EXPIRED_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


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
        self.worker = BatchWorker()
        self.read_wait_seconds = READ_WAIT_SECONDS
        self._read_deadline = 0.0  # monotonic; set by each read before it settles validations

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
                    "duration": span.draw(u[0]),
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
            self.worker.submit(batch_id, lambda: prepare(work, record, self.responder))
            return self.render(record)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        with self.store.lock:
            self._read_deadline = time.monotonic() + self.read_wait_seconds
            record = self._record(batch_id)
            self.refresh(record)
            return self.render(record)

    def list(self, *, after: str | None, limit: int) -> dict[str, Any]:
        with self.store.lock:
            self._read_deadline = time.monotonic() + self.read_wait_seconds
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
            self._read_deadline = time.monotonic() + self.read_wait_seconds
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
            prepared = self._prepared(record)
            if prepared is None:
                break  # its work is not done yet: it, and every batch after it, stays validating
            self._admit(record, prepared, record["created_at"] + record["profile"]["validation_seconds"])
            self.store.save_batch(record)
        cancelling = [
            r for r in self.store.batches.values() if r["status"] == "cancelling" and r["in_progress_at"] is None
        ]
        for record in cancelling:
            cancelled_at = record["cancelling_at"] + record["profile"]["cancel_seconds"]
            if now >= cancelled_at:
                self._finish(record, "cancelled", cancelled_at)
                self.store.save_batch(record)

    def _prepared(self, record: dict[str, Any]) -> PreparedBatch | None:
        """The batch's finished work, waiting for it only until this read's deadline."""
        if not self.worker.has(record["id"]):
            # Created before a restart (no job queued): prepare it now, as a read would have.
            return prepare(self.store.batch_dir(record["id"]), record, self.responder)
        return self.worker.wait(record["id"], self._read_deadline - time.monotonic())

    def _admit(self, record: dict[str, Any], prepared: PreparedBatch, at: float) -> None:
        """The end of validation at ``at``: fail the batch on a bad line or a full queue, else start it."""
        work = self.store.batch_dir(record["id"])
        model = record["model"] = prepared.model
        if prepared.errors:
            _remove_work(work)
            record["status"] = "failed"
            record["failed_at"] = at
            record["errors"] = {"object": "list", "data": prepared.errors}
            return
        tokens = prepared.prompt_tokens
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
        record["status"] = "in_progress"
        record["in_progress_at"] = at
        record["total"] = prepared.count
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
        if self.worker.has(record["id"]):
            # Cancelled before its validation ended: no line ran, and its work may still be
            # writing the pending files, so they are removed once it stops, never adopted.
            self.worker.discard(record["id"], cleanup=lambda: _remove_work(work))
            return
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
