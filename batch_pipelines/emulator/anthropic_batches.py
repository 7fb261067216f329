"""Anthropic Message Batches: inline requests, counts that move only at the end, JSONL results.

The timeline mirrors the OpenAI one (seeded duration, expiry at 24 h, a cancel that takes
``cancel_seconds``), but Anthropic reports no partial progress: every request stays
``processing`` until the batch ends, and the results file is written in one pass then.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from batch_pipelines.core.requests import CUSTOM_ID_PATTERN
from batch_pipelines.emulator.clock import VirtualClock
from batch_pipelines.emulator.errors import ApiError, anthropic_error_body
from batch_pipelines.emulator.faults import uniforms, weighted_choice
from batch_pipelines.emulator.profile import Profile
from batch_pipelines.emulator.responses import Responder, UsageTotals
from batch_pipelines.emulator.state import MESSAGE_BATCH_ID, Store

WINDOW_SECONDS = 24 * 3600
MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1024 * 1024
ITEM_ERRORS = {
    "invalid_request_400": (400, "Invalid request (injected by the emulator's fault profile)."),
    "server_error_500": (500, "Internal server error (injected by the emulator's fault profile)."),
    "rate_limited_429": (429, "Rate limited (injected by the emulator's fault profile)."),
}
_MALFORMED_TAIL = 40
# Requests of batches not yet ended are kept parsed in memory up to this many bytes of their
# JSON, so ending a batch does not parse what creating it already parsed. Beyond it, and after
# a restart, they are read back from the batch's requests.jsonl.
_HELD_REQUEST_BYTES = 64 * 1024 * 1024


def not_found(batch_id: str) -> ApiError:
    return ApiError(404, f"message_batch_id: no Message Batch found with id '{batch_id}'")


def rfc3339(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AnthropicBatches:
    def __init__(self, store: Store, clock: VirtualClock, responder: Responder, profile: Callable[[], Profile]) -> None:
        self.store = store
        self.clock = clock
        self.responder = responder
        self.profile = profile
        self._held: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self._held_bytes = 0

    def create(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict) or not isinstance(payload.get("requests"), list):
            raise ApiError(400, "requests: Field required (a list of {custom_id, params})")
        requests = payload["requests"]
        if not requests:
            raise ApiError(400, "requests: at least one request is required")
        if len(requests) > MAX_REQUESTS:
            raise ApiError(400, f"requests: a batch holds at most {MAX_REQUESTS} requests; got {len(requests)}")
        seen: set[str] = set()
        for index, item in enumerate(requests):
            if not isinstance(item, dict):
                raise ApiError(400, f"requests.{index}: must be an object with custom_id and params")
            custom_id = item.get("custom_id")
            if not isinstance(custom_id, str) or not CUSTOM_ID_PATTERN.match(custom_id):
                raise ApiError(400, f"requests.{index}.custom_id: must match {CUSTOM_ID_PATTERN.pattern}")
            if custom_id in seen:
                raise ApiError(
                    400,
                    f"requests.{index}.custom_id: '{custom_id}' is used more than once; custom_id must be "
                    "unique within a batch",
                )
            seen.add(custom_id)
            params = item.get("params")
            if not isinstance(params, dict):
                raise ApiError(400, f"requests.{index}.params: Field required")
            if not isinstance(params.get("model"), str) or not params["model"]:
                raise ApiError(400, f"requests.{index}.params.model: Field required")
            max_tokens = params.get("max_tokens")
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
                raise ApiError(400, f"requests.{index}.params.max_tokens: a positive integer is required")
            if not isinstance(params.get("messages"), list) or not params["messages"]:
                raise ApiError(400, f"requests.{index}.params.messages: a non-empty list is required")
        profile = self.profile()
        with self.store.lock:
            batch_id, seq = self.store.new_id("msgbatch_", 24)
            work = self.store.anthropic_dir(batch_id)
            kept = [{"custom_id": r["custom_id"], "params": r["params"]} for r in requests]
            with open(work / "requests.jsonl", "wb") as out:
                size = out.write(b"\n".join(orjson.dumps(r) for r in kept) + b"\n")
            if self._held_bytes + size <= _HELD_REQUEST_BYTES:
                self._held[batch_id] = (kept, size)
                self._held_bytes += size
            u = uniforms(profile.seed, "batch", seq)
            span = profile.batch_completion_seconds
            record = {
                "id": batch_id,
                "seq": seq,
                "created_at": self.clock.now(),
                "profile": profile.to_dict(),
                "plan": {
                    "duration": profile.validation_seconds + span.draw(u[0]),
                    "expires": profile.never_complete or u[1] < profile.expire_rate,
                },
                "processing_status": "in_progress",
                "total": len(requests),
                "counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
                "ended_at": None,
                "cancel_initiated_at": None,
                "usage": UsageTotals().to_dict(),
            }
            self.store.save_anthropic_batch(record)
            self.store.count_created("anthropic")
            return record

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        with self.store.lock:
            record = self._record(batch_id)
            self.refresh(record)
            return record

    def list(self, *, after_id: str | None, before_id: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        with self.store.lock:
            records = sorted(self.store.anthropic_batches.values(), key=lambda r: r["seq"], reverse=True)
            ids = [r["id"] for r in records]
            if after_id:
                records = records[ids.index(after_id) + 1 :] if after_id in ids else []
                page, has_more = records[:limit], len(records) > limit
            elif before_id:
                records = records[: ids.index(before_id)] if before_id in ids else []
                page, has_more = records[-limit:], len(records) > limit
            else:
                page, has_more = records[:limit], len(records) > limit
            for record in page:
                self.refresh(record)
            return page, has_more

    def cancel(self, batch_id: str) -> dict[str, Any]:
        with self.store.lock:
            record = self._record(batch_id)
            self.refresh(record)
            if record["processing_status"] == "ended":
                raise ApiError(400, f"Message Batch {batch_id} has already ended and cannot be canceled.")
            if record["processing_status"] == "in_progress":
                record["processing_status"] = "canceling"
                record["cancel_initiated_at"] = self.clock.now()
                self.store.save_anthropic_batch(record)
                self.refresh(record)
            return record

    def delete(self, batch_id: str) -> dict[str, Any]:
        with self.store.lock:
            record = self._record(batch_id)
            self.refresh(record)
            if record["processing_status"] != "ended":
                raise ApiError(
                    400,
                    f"Message Batch {batch_id} is still {record['processing_status']}; cancel it and wait for "
                    "it to end before deleting it.",
                )
            self._release(batch_id)
            self.store.delete_anthropic_batch(batch_id)
            return {"id": batch_id, "type": "message_batch_deleted"}

    def results_path(self, batch_id: str) -> Any:
        with self.store.lock:
            record = self._record(batch_id)
            self.refresh(record)
            if record["processing_status"] != "ended":
                raise ApiError(404, f"Message Batch {batch_id} has not ended yet; its results are not available.")
            return self.store.anthropic_dir(batch_id) / "results.jsonl"

    def _record(self, batch_id: str) -> dict[str, Any]:
        if not MESSAGE_BATCH_ID.match(batch_id) or batch_id not in self.store.anthropic_batches:
            raise not_found(batch_id)
        return self.store.anthropic_batches[batch_id]

    # -- timeline -------------------------------------------------------------------------

    def refresh(self, record: dict[str, Any]) -> None:
        if record["processing_status"] == "ended":
            return
        now = self.clock.now()
        profile = record["profile"]
        created = record["created_at"]
        expires_at = created + WINDOW_SECONDS
        duration, expiring = _effective_duration(record)
        if record["processing_status"] == "canceling":
            ended_at = record["cancel_initiated_at"] + profile["cancel_seconds"]
            if now >= ended_at:
                self._end(
                    record, ended_at, done=_done(record, record["cancel_initiated_at"], duration), rest="canceled"
                )
        elif expiring:
            if now >= expires_at:
                self._end(record, expires_at, done=_done(record, expires_at, duration), rest="expired")
        elif now >= created + duration:
            self._end(record, created + duration, done=record["total"], rest="canceled")

    def _end(self, record: dict[str, Any], at: float, *, done: int, rest: str) -> None:
        profile = Profile.from_mapping(record["profile"])
        work = self.store.anthropic_dir(record["id"])
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        usage = UsageTotals()
        lines: list[bytes] = []
        malformed_left = profile.malformed_output_lines
        error_rate = 1.0 if profile.all_lines_fail else profile.item_error_rate
        dumps = orjson.dumps
        with self._requests(record["id"], work) as requests:
            for index, request in enumerate(requests):
                custom_id = request["custom_id"]
                if index >= done:
                    counts[rest] += 1
                    lines.append(dumps({"custom_id": custom_id, "result": {"type": rest}}))
                    continue
                u_missing, u_error, u_kind, _ = uniforms(profile.seed, "line", record["seq"], index)
                if u_error < error_rate:
                    status, message = ITEM_ERRORS[weighted_choice(profile.item_error_kinds, u_kind)]
                    counts["errored"] += 1
                    lines.append(
                        dumps(
                            {
                                "custom_id": custom_id,
                                "result": {"type": "errored", "error": anthropic_error_body(status, message)},
                            }
                        )
                    )
                    continue
                if u_missing < profile.missing_line_rate:
                    counts["succeeded"] += 1  # reported succeeded, yet absent from the results
                    continue
                message_id = "msg_" + hashlib.blake2b(f"{record['id']}:{index}".encode(), digest_size=12).hexdigest()
                try:
                    reply, line_usage = self.responder.message(
                        request["params"], profile=profile, key=custom_id, message_id=message_id, service_tier="batch"
                    )
                except ApiError as exc:
                    counts["errored"] += 1
                    lines.append(
                        dumps(
                            {
                                "custom_id": custom_id,
                                "result": {"type": "errored", "error": anthropic_error_body(exc.status, exc.message)},
                            }
                        )
                    )
                    continue
                usage.add(line_usage)
                counts["succeeded"] += 1
                encoded = dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": reply}})
                if malformed_left > 0:
                    malformed_left -= 1
                    encoded = encoded[: max(1, len(encoded) - _MALFORMED_TAIL)]
                lines.append(encoded)
        (work / "results.jsonl").write_bytes(b"\n".join(lines) + b"\n" if lines else b"")
        record["counts"] = counts
        record["usage"] = usage.to_dict()
        record["processing_status"] = "ended"
        record["ended_at"] = at
        self.store.save_anthropic_batch(record)

    @contextmanager
    def _requests(self, batch_id: str, work: Path) -> Iterator[Iterable[dict[str, Any]]]:
        """The batch's requests in order: the parsed copy kept at create, else its file."""
        held = self._release(batch_id)
        if held is not None:
            yield held
            return
        with open(work / "requests.jsonl", "rb") as source:
            yield map(orjson.loads, source)

    def _release(self, batch_id: str) -> builtins.list[dict[str, Any]] | None:  # `list` here is our method
        held = self._held.pop(batch_id, None)
        if held is None:
            return None
        self._held_bytes -= held[1]
        return held[0]

    @staticmethod
    def render(record: dict[str, Any], base_url: str) -> dict[str, Any]:
        ended = record["processing_status"] == "ended"
        return {
            "id": record["id"],
            "type": "message_batch",
            "processing_status": record["processing_status"],
            "request_counts": dict(record["counts"]),
            "created_at": rfc3339(record["created_at"]),
            "expires_at": rfc3339(record["created_at"] + WINDOW_SECONDS),
            "ended_at": rfc3339(record["ended_at"]),
            "cancel_initiated_at": rfc3339(record["cancel_initiated_at"]),
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{record['id']}/results" if ended else None,
        }


def _effective_duration(record: dict[str, Any]) -> tuple[float, bool]:
    window = WINDOW_SECONDS
    if record["plan"]["expires"]:
        done_fraction = 1.0 - record["profile"]["unfinished_at_expiry"]
        return (window / done_fraction if done_fraction > 0 else float("inf")), True
    duration = record["plan"]["duration"]
    return duration, duration > window


def _done(record: dict[str, Any], at: float, duration: float) -> int:
    if duration == float("inf"):
        return 0
    elapsed = at - record["created_at"]
    return record["total"] if elapsed >= duration else max(0, int(record["total"] * elapsed / duration + 1e-9))
