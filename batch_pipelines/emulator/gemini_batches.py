"""Gemini batch mode: ``batchGenerateContent`` and ``asyncBatchEmbedContent`` on the virtual clock.

A batch is ``BATCH_STATE_PENDING`` for the profile's ``validation_seconds``, then
``BATCH_STATE_RUNNING`` until it ends: ``SUCCEEDED`` after its seeded duration, ``EXPIRED`` 48 h
after creation (Google's limit), or ``CANCELLED`` ``cancel_seconds`` after a cancel. Like the
Anthropic batches here (and unlike OpenAI's), counts move only when the batch ends, and the
results are written in one pass then.

Results, in input order: a file batch gets a generated JSONL file of ``{"key", "response"}`` or
``{"key", "error"}`` lines (``error`` a ``google.rpc.Status`` with a gRPC code); an inline batch
gets ``inlinedResponses`` with each request's ``metadata`` echoed. On cancel and expiry the
requests that ran keep their answers and the rest get a ``CANCELLED`` or ``DEADLINE_EXCEEDED``
status (Google does not document partial output; the emulator gives it so clients can be tested
for salvaging it, and clients must not rely on it: see docs/gemini.md).

A full queue (the profile's ``enqueued_token_limits``) refuses the create with 429
``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson

from batch_pipelines.emulator import accounting
from batch_pipelines.emulator.clock import VirtualClock
from batch_pipelines.emulator.errors import ApiError
from batch_pipelines.emulator.faults import uniforms, weighted_choice
from batch_pipelines.emulator.gemini_files import GeminiFiles, page_start, page_token
from batch_pipelines.emulator.gemini_wire import (
    answer_embed,
    answer_generate,
    chat_body,
    field,
    model_id,
    timestamp,
)
from batch_pipelines.emulator.profile import Profile
from batch_pipelines.emulator.responses import Responder, UsageTotals
from batch_pipelines.emulator.state import Store, write_json_atomic

WINDOW_SECONDS = 48 * 3600
MAX_INLINE_BYTES = 20 * 1024 * 1024
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
BATCH_ID_LENGTH = 20
_TYPE_PREFIX = "type.googleapis.com/google.ai.generativelanguage.v1beta."
# gRPC canonical codes: a batch line's status is a google.rpc.Status, not an HTTP envelope.
GRPC = {"CANCELLED": 1, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "RESOURCE_EXHAUSTED": 8, "INTERNAL": 13}
_HTTP_TO_GRPC = {400: "INVALID_ARGUMENT", 404: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}
ITEM_ERRORS = {
    "invalid_request_400": ("INVALID_ARGUMENT", "Invalid request (injected by the emulator's fault profile)."),
    "server_error_500": ("INTERNAL", "Internal error (injected by the emulator's fault profile)."),
    "rate_limited_429": ("RESOURCE_EXHAUSTED", "Resource exhausted (injected by the emulator's fault profile)."),
}
UNFINISHED = {
    "BATCH_STATE_CANCELLED": ("CANCELLED", "The batch was cancelled before this request ran."),
    "BATCH_STATE_EXPIRED": ("DEADLINE_EXCEEDED", "The batch expired before this request ran."),
}
TERMINAL = frozenset({"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"})
_MALFORMED_TAIL = 40


def rpc_status(status: str, message: str) -> dict[str, Any]:
    return {"code": GRPC[status], "message": message, "status": status}


def not_found(name: str) -> ApiError:
    return ApiError(404, f"Batch {name} not found.")


class GeminiBatches:
    def __init__(
        self,
        store: Store,
        clock: VirtualClock,
        files: GeminiFiles,
        responder: Responder,
        profile: Callable[[], Profile],
    ) -> None:
        self.store = store
        self.clock = clock
        self.files = files
        self.responder = responder
        self.profile = profile
        self.root = store.root / "gemini" / "batches"
        self.root.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict[str, Any]] = {}
        for path in self.root.glob("*.json"):
            self.records[path.stem] = orjson.loads(path.read_bytes())

    # -- API ------------------------------------------------------------------------------

    def create(self, model_resource: str, payload: Any, *, kind: str) -> dict[str, Any]:
        """``kind`` is ``generate`` (batchGenerateContent) or ``embed`` (asyncBatchEmbedContent)."""
        batch = payload.get("batch") if isinstance(payload, dict) else None
        if not isinstance(batch, dict):
            raise ApiError(400, 'Invalid JSON payload: the body must be {"batch": {...}}.')
        model = model_id(model_resource)
        named = batch.get("model")
        if named is not None and model_id(str(named)) != model:
            raise ApiError(400, f"batch.model {named!r} does not match the model in the URL ({model_resource}).")
        display_name = field(batch, "displayName") or ""
        if not isinstance(display_name, str) or len(display_name) > 512:
            raise ApiError(400, "batch.display_name must be a string of at most 512 characters.")
        priority = batch.get("priority", 0)
        try:
            priority = int(priority)
        except (TypeError, ValueError):
            raise ApiError(400, f"batch.priority {priority!r} is not an integer.") from None
        config = field(batch, "inputConfig")
        if not isinstance(config, dict):
            raise ApiError(400, "batch.input_config is required: a fileName or inline requests.")
        file_name = field(config, "fileName")
        inline = config.get("requests")
        if (file_name is None) == (inline is None):
            raise ApiError(400, "batch.input_config needs exactly one of file_name and requests.")
        entries = self._file_entries(file_name) if file_name is not None else _inline_entries(inline)
        if not entries:
            raise ApiError(400, "The batch holds no requests.")
        profile = self.profile()
        self._check_queue(model, kind, entries, profile)
        with self.store.lock:
            batch_id, seq = self.store.new_id("", BATCH_ID_LENGTH)
            work = self.root / batch_id
            work.mkdir(exist_ok=True)
            with open(work / "requests.jsonl", "wb") as out:
                for entry in entries:
                    out.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
            u = uniforms(profile.seed, "gemini-batch", seq)
            span = profile.batch_completion_seconds
            record = {
                "id": batch_id,
                "seq": seq,
                "kind": kind,
                "model": f"models/{model}",
                "display_name": display_name,
                "priority": priority,
                "input_config": {"fileName": file_name} if file_name is not None else None,
                "created_at": self.clock.now(),
                "profile": profile.to_dict(),
                "plan": {
                    "duration": profile.validation_seconds + span.draw(u[0]),
                    "expires": profile.never_complete or u[1] < profile.expire_rate,
                },
                "total": len(entries),
                "prompt_tokens": self._queue_tokens(model, kind, entries, profile),
                "state": None,
                "cancel_at": None,
                "ended_at": None,
                "output": None,
                "stats": None,
                "usage": UsageTotals().to_dict(),
            }
            self.refresh(record)
            self._save(record)
            self.store.count_created("gemini")
            return record

    def get(self, batch_id: str) -> dict[str, Any]:
        with self.store.lock:
            record = self._record(batch_id)
            self.refresh(record)
            return record

    def list_page(self, page_size: int, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        with self.store.lock:
            records = sorted(self.records.values(), key=lambda r: r["seq"], reverse=True)
            start = page_start(token)
            page = records[start : start + page_size]
            for record in page:
                self.refresh(record)
            return page, (page_token(start + page_size) if start + page_size < len(records) else None)

    def cancel(self, batch_id: str) -> None:
        with self.store.lock:
            record = self._record(batch_id)
            self.refresh(record)
            if record["state"] in TERMINAL:
                raise ApiError(400, f"Batch batches/{batch_id} is already {record['state']} and cannot be cancelled.")
            if record["cancel_at"] is None:
                record["cancel_at"] = self.clock.now()
                self._save(record)
                self.refresh(record)

    def delete(self, batch_id: str) -> None:
        with self.store.lock:
            record = self._record(batch_id)
            self.records.pop(batch_id, None)
            (self.root / f"{record['id']}.json").unlink(missing_ok=True)
            for path in (self.root / record["id"]).glob("*"):
                path.unlink()
            (self.root / record["id"]).rmdir()

    def enqueued_tokens(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        with self.store.lock:
            for record in self.records.values():
                self.refresh(record)
                if record["state"] not in TERMINAL:
                    model = model_id(record["model"])
                    totals[model] = totals.get(model, 0) + record["prompt_tokens"]
        return totals

    def _record(self, batch_id: str) -> dict[str, Any]:
        batch_id = batch_id.removeprefix("batches/")
        if batch_id not in self.records:
            raise not_found(f"batches/{batch_id}")
        return self.records[batch_id]

    def _save(self, record: dict[str, Any]) -> None:
        self.records[record["id"]] = record
        write_json_atomic(self.root / f"{record['id']}.json", record)

    # -- input ----------------------------------------------------------------------------

    def _file_entries(self, file_name: Any) -> list[dict[str, Any]]:
        if not isinstance(file_name, str):
            raise ApiError(400, "batch.input_config.file_name must be a string such as 'files/abc123'.")
        try:
            path = self.files.data_path(file_name)
        except ApiError:
            raise ApiError(400, f"Input file {file_name} was not found.") from None
        entries: list[dict[str, Any]] = []
        seen: set[str] = set()
        with open(path, "rb") as source:
            for number, raw in enumerate(source, 1):
                if not raw.strip():
                    continue
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise ApiError(400, f"Line {number} of {file_name} is not valid JSON.") from None
                key = line.get("key") if isinstance(line, dict) else None
                if not isinstance(key, str) or not key or not isinstance(line.get("request"), dict):
                    raise ApiError(400, f"Line {number} of {file_name} needs a string 'key' and a 'request' object.")
                if key in seen:
                    raise ApiError(400, f"Line {number} of {file_name} repeats the key {key!r}.")
                seen.add(key)
                entries.append({"key": key, "request": line["request"]})
        return entries

    def _check_queue(self, model: str, kind: str, entries: list[dict[str, Any]], profile: Profile) -> None:
        limit = profile.enqueued_token_limits.get(model)
        if limit is None:
            return
        tokens = self._queue_tokens(model, kind, entries, profile)
        queued = self.enqueued_tokens().get(model, 0)
        if queued + tokens > limit:
            raise ApiError(
                429,
                f"Resource has been exhausted: enqueued tokens for {model} would be {queued + tokens}, "
                f"over the limit of {limit}.",
            )

    @staticmethod
    def _queue_tokens(model: str, kind: str, entries: list[dict[str, Any]], profile: Profile) -> int:
        if not profile.enqueued_token_limits.get(model):
            return 0
        total = 0
        for entry in entries:
            try:
                if kind == "embed":
                    total += answer_embed(model, entry["request"], "request")[1]
                else:
                    total += accounting.prompt_tokens(chat_body(model, entry["request"]))
            except ApiError:
                continue  # a bad line fails on its own when the batch runs
        return total

    # -- timeline -------------------------------------------------------------------------

    def refresh(self, record: dict[str, Any]) -> None:
        """Bring a batch up to the clock: its state, and its results once it ends."""
        if record["state"] in TERMINAL:
            return
        now = self.clock.now()
        created = record["created_at"]
        profile = record["profile"]
        duration, expiring = _effective_duration(record)
        if record["cancel_at"] is not None:
            ends = record["cancel_at"] + profile["cancel_seconds"]
            if now >= ends:
                done = _done(record, record["cancel_at"], duration)
                self._end(record, ends, done=done, state="BATCH_STATE_CANCELLED")
                return
        elif expiring and now >= created + WINDOW_SECONDS:
            expired_at = created + WINDOW_SECONDS
            self._end(record, expired_at, done=_done(record, expired_at, duration), state="BATCH_STATE_EXPIRED")
            return
        elif not expiring and now >= created + duration:
            self._end(record, created + duration, done=record["total"], state="BATCH_STATE_SUCCEEDED")
            return
        validated = now >= created + profile["validation_seconds"]
        record["state"] = "BATCH_STATE_RUNNING" if validated else "BATCH_STATE_PENDING"

    def _end(self, record: dict[str, Any], at: float, *, done: int, state: str) -> None:
        profile = Profile.from_mapping(record["profile"])
        work = self.root / record["id"]
        model = model_id(record["model"])
        usage = UsageTotals()
        stats = {"succeeded": 0, "failed": 0, "unfinished": 0}
        error_rate = 1.0 if profile.all_lines_fail else profile.item_error_rate
        malformed_left = profile.malformed_output_lines
        inline = record["input_config"] is None
        results: list[dict[str, Any]] = []
        lines: list[bytes] = []
        with open(work / "requests.jsonl", "rb") as source:
            for index, raw in enumerate(source):
                entry = orjson.loads(raw)
                result: dict[str, Any] = {"key": entry["key"]} if not inline else {}
                if inline and "metadata" in entry:
                    result["metadata"] = entry["metadata"]
                if index >= done:
                    stats["unfinished"] += 1
                    result["error"] = rpc_status(*UNFINISHED[state])
                else:
                    u_missing, u_error, u_kind, _ = uniforms(profile.seed, "gemini-line", record["seq"], index)
                    if u_error < error_rate:
                        stats["failed"] += 1
                        result["error"] = rpc_status(*ITEM_ERRORS[weighted_choice(profile.item_error_kinds, u_kind)])
                    elif u_missing < profile.missing_line_rate:
                        stats["succeeded"] += 1  # reported succeeded, yet absent from the results
                        continue
                    else:
                        try:
                            result["response"] = self._answer(record, model, entry, index, profile, usage)
                            stats["succeeded"] += 1
                        except ApiError as exc:
                            stats["failed"] += 1
                            result["error"] = rpc_status(_HTTP_TO_GRPC.get(exc.status, "INVALID_ARGUMENT"), exc.message)
                if inline:
                    results.append(result)
                    continue
                encoded = orjson.dumps(result)
                if malformed_left > 0 and "response" in result:
                    malformed_left -= 1
                    encoded = encoded[: max(1, len(encoded) - _MALFORMED_TAIL)]
                lines.append(encoded)
        if inline:
            key = "inlinedEmbedContentResponses" if record["kind"] == "embed" else "inlinedResponses"
            record["output"] = {key: {"inlinedResponses": results}}
        else:
            output = work / "output.jsonl"
            output.write_bytes(b"\n".join(lines) + b"\n" if lines else b"")
            name = self.files.adopt(output, display_name=f"batch-{record['id']}-results")["name"]
            record["output"] = {"responsesFile": name}
        record["stats"] = stats
        record["usage"] = usage.to_dict()
        record["state"] = state
        record["ended_at"] = at
        self._save(record)

    def _answer(
        self,
        record: dict[str, Any],
        model: str,
        entry: dict[str, Any],
        index: int,
        profile: Profile,
        usage: UsageTotals,
    ) -> dict[str, Any]:
        if record["kind"] == "embed":
            values, tokens = answer_embed(model, entry["request"], "request")
            usage.add(UsageTotals(tokens, 0, 0, 0))
            return {"embedding": {"values": values}, "tokenCount": str(tokens)}
        response_id = hashlib.blake2b(f"{record['id']}:{index}".encode(), digest_size=12).hexdigest()
        response, line_usage = answer_generate(
            self.responder, model, entry["request"], profile=profile, key=entry["key"], response_id=response_id
        )
        usage.add(line_usage)
        return response

    # -- wire shape -----------------------------------------------------------------------

    def render(self, record: dict[str, Any]) -> dict[str, Any]:
        """The batch as Google's ``Operation``: the batch in ``metadata``, ``done`` once it ended."""
        name = f"batches/{record['id']}"
        ended = record["state"] in TERMINAL
        kind = "EmbedContentBatch" if record["kind"] == "embed" else "GenerateContentBatch"
        total = record["total"]
        stats = record["stats"] or {"succeeded": 0, "failed": 0, "unfinished": total}
        metadata: dict[str, Any] = {
            "@type": _TYPE_PREFIX + kind,
            "name": name,
            "model": record["model"],
            "displayName": record["display_name"],
            "inputConfig": record["input_config"] or {"requests": {}},
            "createTime": timestamp(record["created_at"]),
            "updateTime": timestamp(record["ended_at"] or record["cancel_at"] or record["created_at"]),
            "state": record["state"],
            "priority": str(record["priority"]),
            "batchStats": {
                "requestCount": str(total),
                "successfulRequestCount": str(stats["succeeded"]),
                "failedRequestCount": str(stats["failed"]),
                "pendingRequestCount": str(stats["unfinished"]),
            },
        }
        operation: dict[str, Any] = {"name": name, "metadata": metadata, "done": ended}
        if ended:
            metadata["endTime"] = timestamp(record["ended_at"])
            metadata["output"] = record["output"]
            if record["state"] == "BATCH_STATE_SUCCEEDED":
                operation["response"] = {"@type": _TYPE_PREFIX + kind + "Output", **record["output"]}
            else:
                reason = UNFINISHED.get(record["state"], ("INTERNAL", "The batch failed."))
                operation["error"] = rpc_status(*reason)
        return operation


def _inline_entries(inline: Any) -> list[dict[str, Any]]:
    requests = inline.get("requests") if isinstance(inline, dict) else None
    if not isinstance(requests, list):
        raise ApiError(400, "batch.input_config.requests.requests must be a list of inlined requests.")
    if len(orjson.dumps(requests)) > MAX_INLINE_BYTES:
        raise ApiError(400, f"Inline requests exceed {MAX_INLINE_BYTES} bytes; upload a JSONL file instead.")
    entries = []
    for index, item in enumerate(requests):
        if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
            raise ApiError(400, f"batch.input_config.requests.requests[{index}].request is required.")
        metadata = item.get("metadata")
        key = metadata.get("key") if isinstance(metadata, dict) else None
        entry: dict[str, Any] = {"key": key if isinstance(key, str) else str(index), "request": item["request"]}
        if metadata is not None:
            entry["metadata"] = metadata
        entries.append(entry)
    return entries


def _effective_duration(record: dict[str, Any]) -> tuple[float, bool]:
    if record["plan"]["expires"]:
        done_fraction = 1.0 - record["profile"]["unfinished_at_expiry"]
        return (WINDOW_SECONDS / done_fraction if done_fraction > 0 else float("inf")), True
    duration = record["plan"]["duration"]
    return duration, duration > WINDOW_SECONDS


def _done(record: dict[str, Any], at: float, duration: float) -> int:
    if duration == float("inf"):
        return 0
    elapsed = at - record["created_at"]
    return record["total"] if elapsed >= duration else max(0, int(record["total"] * elapsed / duration + 1e-9))
