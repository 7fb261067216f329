"""The batch lane of Gemini's native Batch API (Developer API, ``v1beta``).

Always a file, never inline requests: results then come back keyed by ``key`` in one JSONL
file we stream to disk (inline results map back by position and come inside the batch object
on every read), one code path serves chat and embeddings, and the 20 MB inline cap never has
to be policed. The cost is one resumable upload per shard, which Google does not bill.

Shards are written in the OpenAI line shape like every other protocol's input; ``upload``
rewrites each line as ``{"key": custom_id, "request": ...}`` (``gemini_translate``) into a file
beside the shard and uploads that, named ``{intent_key}.jsonl``.

Idempotency: Gemini batches carry no metadata, but they have a display name. The batch is
created with the intent key as its ``displayName``; after an answer that leaves it unknown
whether the batch exists, the lane looks for that name in ``GET /v1beta/batches`` before
trying again, and a resumed submit does the same (``find_by_intent``). The list's order is
not documented, so pages are filtered by creation time, never cut short by it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from batch_pipelines.core.batches import BatchInfo
from batch_pipelines.core.errors import MalformedResponseError, ProviderError, QueueFullError
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.requests import Endpoint
from batch_pipelines.core.status import BatchStatus, normalise_status
from batch_pipelines.providers.batch_lane import (
    DEFAULT_MAX_PAGES,
    ONE_SHOT,
    BatchLane,
    ResultFiles,
    epoch_to_datetime,
    require_dict,
    response_may_have_created,
)
from batch_pipelines.providers.gemini_results import status_of
from batch_pipelines.providers.gemini_translate import API_VERSION, batch_line_request, model_path
from batch_pipelines.providers.http import path_segment
from batch_pipelines.providers.results_parsing import ParseReport, iter_outcomes
from batch_pipelines.providers.retry import parse_retry_after, send_with_retry
from batch_pipelines.providers.sharding import Shard

UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024  # Google's upload granularity; the SDK sends the same
PAGE_SIZE = 100
_ENDED_AS = {BatchStatus.EXPIRED: OutcomeKind.EXPIRED, BatchStatus.CANCELLED: OutcomeKind.CANCELLED}


def upload_display_name(intent_key: str) -> str:
    return f"{intent_key}.jsonl"


def _object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (absent optional fields)."""
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    """An int64 count, which proto3 JSON writes as a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def parse_gemini_batch(payload: Any, provider: str) -> BatchInfo:
    """A batch ``Operation`` (the batch in ``metadata``) as a ``BatchInfo``."""
    operation = require_dict(payload, "batch operation")
    name = operation.get("name")
    batch = _object(operation.get("metadata"))
    state = batch.get("state")
    if not isinstance(name, str) or not name.startswith("batches/") or not isinstance(state, str):
        raise MalformedResponseError("batch operation has no batches/ name or metadata.state", keys=sorted(operation))
    stats = _object(batch.get("batchStats"))
    inputs = _object(batch.get("inputConfig"))
    output = _object(batch.get("output"))
    status = normalise_status("gemini", state)
    model = batch.get("model")
    display_name = batch.get("displayName")
    return BatchInfo(
        provider=provider,
        vendor_batch_id=name.removeprefix("batches/"),
        status=status,
        vendor_status=state,
        model=model.removeprefix("models/") if isinstance(model, str) else None,
        total=_int(stats.get("requestCount")),
        completed=_int(stats.get("successfulRequestCount")) if status.is_terminal else None,
        failed=_int(stats.get("failedRequestCount")) if status.is_terminal else None,
        input_file_id=inputs.get("fileName") or inputs.get("file_name"),
        output_file_id=output.get("responsesFile"),
        created_at=epoch_to_datetime(batch.get("createTime")),
        ended_at=epoch_to_datetime(batch.get("endTime")),
        metadata={"display_name": display_name} if isinstance(display_name, str) else {},
        raw=operation,
    )


@dataclass(frozen=True, slots=True)
class GeminiResultFiles(ResultFiles):
    """The results file, and how the batch ended: ids with no line did not run if it expired or was cancelled."""

    ended_as: BatchStatus | None = None


class GeminiBatchLane(BatchLane):
    protocol = "gemini"
    uses_files = True

    # -- submit ------------------------------------------------------------------------------
    def upload(self, shard: Shard, *, intent_key: str) -> str:
        """Rewrite the shard as Gemini lines and upload it (resumable); returns ``files/{id}``."""
        source = self._gemini_lines(shard)
        size = source.stat().st_size
        start = self._send(
            "POST",
            f"/upload/{API_VERSION}/files",
            json={"file": {"displayName": upload_display_name(intent_key)}},
            headers={
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(size),
                "X-Goog-Upload-Header-Content-Type": "application/jsonl",
            },
        )
        upload_url = start.headers.get("x-goog-upload-url")
        if not upload_url:
            raise MalformedResponseError("the upload start answered no X-Goog-Upload-URL header")
        # Like google-genai, send the bytes to the configured host: the key never goes elsewhere.
        target = httpx.URL(upload_url)
        path = target.raw_path.decode("ascii")
        response: httpx.Response | None = None
        with open(source, "rb") as handle:
            offset = 0
            while True:
                chunk = handle.read(UPLOAD_CHUNK_BYTES)
                last = offset + len(chunk) >= size
                headers = {
                    "X-Goog-Upload-Command": "upload, finalize" if last else "upload",
                    "X-Goog-Upload-Offset": str(offset),
                }
                response = self._send("POST", path, content=chunk, headers=headers)
                offset += len(chunk)
                if last:
                    break
        source.unlink(missing_ok=True)
        if response.headers.get("x-goog-upload-status") != "final":
            raise ProviderError(
                "the upload did not finalize", upload_status=response.headers.get("x-goog-upload-status")
            )
        file = require_dict(response.json(), "upload answer").get("file")
        name = file.get("name") if isinstance(file, dict) else None
        if not isinstance(name, str):
            raise MalformedResponseError("the finished upload answered no file name")
        return name

    def _gemini_lines(self, shard: Shard) -> Path:
        target = shard.path.with_name(shard.path.stem + ".gemini.jsonl")
        with open(shard.path, "rb") as source, open(target, "wb") as out:
            for raw in source:
                line = orjson.loads(raw)
                request = batch_line_request(shard.endpoint, line["body"], shard.model, line["custom_id"])
                out.write(
                    orjson.dumps({"key": line["custom_id"], "request": request}, option=orjson.OPT_APPEND_NEWLINE)
                )
        return target

    def create(
        self,
        shard: Shard,
        *,
        intent_key: str,
        fingerprint: str,
        input_file_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
    ) -> BatchInfo:
        """Create the batch named ``intent_key``, or return the one an earlier, unanswered attempt created."""
        if not input_file_id:
            raise ValueError("the gemini protocol needs the uploaded file's name to create a batch")
        method = "asyncBatchEmbedContent" if shard.endpoint is Endpoint.EMBEDDINGS else "batchGenerateContent"
        path = model_path(shard.model, method)
        body = {"batch": {"displayName": intent_key, "inputConfig": {"fileName": input_file_id}}}
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            hint: float | None = None
            try:
                response = send_with_retry(
                    self.http,
                    lambda: self.http.build_request("POST", path, json=body),
                    ONE_SHOT,
                    sleep=self.sleep,
                    clock=self.clock,
                    raise_for_status=False,
                )
            except ProviderError as exc:  # no answer: the batch may or may not exist
                failure: ProviderError = exc
            else:
                if response.is_success:
                    return replace(parse_gemini_batch(response.json(), self.provider), model=shard.model)
                message, status = google_error(response)
                hint = parse_retry_after(response.headers)
                failure_cls = QueueFullError if response.status_code == 429 else ProviderError
                failure = failure_cls(
                    f"POST {path} failed with HTTP {response.status_code}: {message}",
                    status_code=response.status_code,
                    error_code=status,
                    retry_after=hint,
                )
                if isinstance(failure, QueueFullError) or not self.retry.should_retry(response):
                    raise failure
            if response_may_have_created(failure):
                existing = self.find_by_intent(intent_key, created_after=created_after)
                if existing is not None:
                    return existing
            delay = self.retry.next_delay(
                attempt=attempt, elapsed=self.clock() - started, hint=hint, rand=random.random()
            )
            if delay is None:
                raise failure
            self.sleep(delay)

    def find_by_intent(
        self, intent_key: str, *, created_after: datetime | None = None, max_pages: int = DEFAULT_MAX_PAGES
    ) -> BatchInfo | None:
        """The batch whose display name is ``intent_key``."""
        for info in self.iter_batches(created_after=created_after, max_pages=max_pages):
            if info.metadata.get("display_name") == intent_key:
                return info
        return None

    def iter_batches(
        self, *, created_after: datetime | None = None, max_pages: int = DEFAULT_MAX_PAGES
    ) -> Iterator[BatchInfo]:
        """``GET /v1beta/batches`` page by page, skipping batches created before ``created_after``."""
        for item in self._pages(f"/{API_VERSION}/batches", "operations", max_pages):
            info = parse_gemini_batch(item, self.provider)
            if created_after is None or info.created_at is None or info.created_at >= created_after:
                yield info

    def _pages(self, path: str, key: str, max_pages: int) -> Iterator[Any]:
        token: str | None = None
        for _ in range(max_pages):
            params: dict[str, Any] = {"pageSize": PAGE_SIZE}
            if token:
                params["pageToken"] = token
            page = self._json("GET", path, params=params)
            items = page.get(key, [])
            if not isinstance(items, list):
                raise MalformedResponseError(f"the list at {path} has no {key} array")
            yield from items
            token = page.get("nextPageToken")
            if not token or not items:
                return

    def find_orphan_uploads(self, intent_key: str, *, keep: str | None = None) -> list[str]:
        """Files uploaded for ``intent_key`` other than ``keep`` (the one the batch reads)."""
        wanted = upload_display_name(intent_key)
        return [
            item["name"]
            for item in self._pages(f"/{API_VERSION}/files", "files", DEFAULT_MAX_PAGES)
            if isinstance(item, dict) and item.get("displayName") == wanted and item.get("name") != keep
        ]

    def delete_file(self, file_id: str) -> None:
        try:
            self._send("DELETE", f"/{API_VERSION}/files/{path_segment(file_id.removeprefix('files/'))}")
        except ProviderError as exc:
            if exc.status_code != 404:  # already gone is what we wanted
                raise

    # -- watch ---------------------------------------------------------------------------------
    def get(self, vendor_batch_id: str) -> BatchInfo:
        return parse_gemini_batch(self._json("GET", self._batch_path(vendor_batch_id)), self.provider)

    def cancel(self, vendor_batch_id: str) -> BatchInfo:
        """Ask for a cancel (``{}`` comes back), then read the batch; one that already ended stays as it is."""
        try:
            self._send("POST", self._batch_path(vendor_batch_id) + ":cancel", json={})
        except ProviderError as exc:
            if exc.status_code not in (400, 409):  # FAILED_PRECONDITION: it had already ended
                raise
        return self.get(vendor_batch_id)

    def _batch_path(self, vendor_batch_id: str) -> str:
        return f"/{API_VERSION}/batches/{path_segment(vendor_batch_id.removeprefix('batches/'))}"

    # -- results ---------------------------------------------------------------------------------
    def download_results(self, info: BatchInfo, dest_dir: str | Path) -> ResultFiles:
        """The results file (absent while running, or if the batch failed as a whole)."""
        ended_as = info.status if info.is_terminal else None
        dest = Path(dest_dir) / "results.jsonl"
        if info.output_file_id:
            file_id = path_segment(info.output_file_id.removeprefix("files/"))
            path = self.download(f"/{API_VERSION}/files/{file_id}:download?alt=media", dest)
            return GeminiResultFiles("gemini", path, ended_as=ended_as)
        batch = _object(info.raw.get("metadata"))
        output = _object(batch.get("output"))
        inline = output.get("inlinedResponses") or output.get("inlinedEmbedContentResponses")
        if isinstance(inline, dict) and isinstance(inline.get("inlinedResponses"), list):
            # Batches created elsewhere with inline requests: their answers echo metadata.key.
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in inline["inlinedResponses"]))
            return GeminiResultFiles("gemini", dest, ended_as=ended_as)
        return GeminiResultFiles("gemini", ended_as=ended_as)

    def iter_outcomes(
        self,
        files: ResultFiles,
        expected_custom_ids: Any,
        *,
        model: str | None = None,
        report: ParseReport | None = None,
    ) -> Iterator[ItemOutcome]:
        """Every expected id once; ids with no line in a batch that expired or was cancelled did not run."""
        ended_as = _ENDED_AS.get(files.ended_as) if isinstance(files, GeminiResultFiles) and files.ended_as else None
        for outcome in iter_outcomes(files.paths, expected_custom_ids, protocol="gemini", model=model, report=report):
            if ended_as is not None and outcome.kind is OutcomeKind.MISSING:
                outcome = replace(outcome, kind=ended_as, reason=f"the batch {ended_as.value} before this request ran")
            yield outcome


def google_error(response: httpx.Response) -> tuple[str, str | None]:
    """Google's error envelope ``{"error": {"code", "message", "status"}}``: (message, status name)."""
    fallback = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    try:
        payload = orjson.loads(response.content)
    except (orjson.JSONDecodeError, httpx.ResponseNotRead):
        return fallback, None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return fallback, None
    message = error.get("message")
    name, _ = status_of(error)
    return (str(message)[:500] if message else fallback), name
