"""The batch lane of the OpenAI protocol (OpenAI, Gemini's compatible surface, aggregators, vLLM).

Idempotency lives in the vendor's own records: the input file is uploaded as
``{intent_key}.jsonl`` and the batch carries ``bp_intent`` and ``bp_fingerprint`` in its
metadata, so a retried submit finds the batch (``find_by_intent``, by scanning ``GET /batches``
pages, newest first) and the stray uploads (``find_orphan_uploads``) of an earlier attempt.

``create`` is never retried blindly: after an answer that leaves it unknown whether the batch
exists (a dropped connection, a timeout, a 5xx), the lane looks for the batch by its intent
key before trying again. A 429 on create is the queue being full: it is waited out per the
retry policy and then raised as ``QueueFullError``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from batch_pipelines.core.batches import BatchError, BatchInfo
from batch_pipelines.core.errors import MalformedResponseError, ProviderError, QueueFullError
from batch_pipelines.core.status import normalise_status
from batch_pipelines.core.usage import Usage
from batch_pipelines.providers.batch_lane import (
    DEFAULT_MAX_PAGES,
    ONE_SHOT,
    BatchLane,
    ResultFiles,
    epoch_to_datetime,
    metadata_of,
    require_dict,
    response_may_have_created,
)
from batch_pipelines.providers.http import path_segment, vendor_error
from batch_pipelines.providers.results_parsing import openai_usage
from batch_pipelines.providers.retry import parse_retry_after, send_with_retry
from batch_pipelines.providers.sharding import Shard

INTENT_KEY = "bp_intent"
FINGERPRINT_KEY = "bp_fingerprint"
MODEL_KEY = "bp_model"
FILE_PAGE_LIMIT = 10_000
QUEUE_FULL_CODES = frozenset({"token_limit_exceeded", "enqueued_token_limit_exceeded"})


def upload_filename(intent_key: str) -> str:
    return f"{intent_key}.jsonl"


def parse_openai_batch(payload: Any, provider: str) -> BatchInfo:
    """An OpenAI batch object as a ``BatchInfo`` (the only place that reads its fields)."""
    data = require_dict(payload, "batch object")
    batch_id = data.get("id")
    status = data.get("status")
    if not isinstance(batch_id, str) or not isinstance(status, str):
        raise MalformedResponseError("batch object has no id or status", keys=sorted(data)[:20])
    raw_counts = data.get("request_counts")
    counts = raw_counts if isinstance(raw_counts, dict) else {}
    errors_block = data.get("errors")
    raw_errors = errors_block.get("data") if isinstance(errors_block, dict) else None
    errors = tuple(
        BatchError(code=e.get("code"), message=e.get("message"), line=e.get("line"), param=e.get("param"))
        for e in (raw_errors or [])
        if isinstance(e, dict)
    )
    metadata = metadata_of(data)
    ended = next(
        (
            epoch_to_datetime(data.get(k))
            for k in ("completed_at", "failed_at", "expired_at", "cancelled_at")
            if data.get(k)
        ),
        None,
    )
    model = data.get("model") if isinstance(data.get("model"), str) else metadata.get(MODEL_KEY)
    return BatchInfo(
        provider=provider,
        vendor_batch_id=batch_id,
        status=normalise_status("openai", status),
        vendor_status=status,
        endpoint=data.get("endpoint"),
        model=model,
        total=counts.get("total"),
        completed=counts.get("completed"),
        failed=counts.get("failed"),
        input_file_id=data.get("input_file_id"),
        output_file_id=data.get("output_file_id"),
        error_file_id=data.get("error_file_id"),
        created_at=epoch_to_datetime(data.get("created_at")),
        expires_at=epoch_to_datetime(data.get("expires_at")),
        ended_at=ended,
        metadata=metadata,
        errors=errors,
        raw=data,
    )


class OpenAIBatchLane(BatchLane):
    protocol = "openai"
    uses_files = True

    # -- submit ------------------------------------------------------------------------------
    def upload(self, shard: Shard, *, intent_key: str) -> str:
        """Upload the shard as ``{intent_key}.jsonl`` (purpose ``batch``); returns the file id."""
        with open(shard.path, "rb") as handle:

            def build() -> httpx.Request:
                handle.seek(0)  # every attempt sends the whole file again
                return self.http.build_request(
                    "POST",
                    "/files",
                    data={"purpose": "batch"},
                    files={"file": (upload_filename(intent_key), handle, "application/jsonl")},
                )

            response = send_with_retry(self.http, build, self.retry, sleep=self.sleep, clock=self.clock)
        payload = require_dict(response.json(), "file object")
        file_id = payload.get("id")
        if not isinstance(file_id, str):
            raise MalformedResponseError("file upload answered no id", keys=sorted(payload)[:20])
        return file_id

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
        """Create the batch, or return the one an earlier, unanswered attempt created."""
        if not input_file_id:
            raise ValueError("the OpenAI protocol needs the uploaded input_file_id to create a batch")
        body = {
            "input_file_id": input_file_id,
            "endpoint": shard.endpoint.value,
            "completion_window": "24h",
            "metadata": {
                **(metadata or {}),
                INTENT_KEY: intent_key,
                FINGERPRINT_KEY: fingerprint,
                MODEL_KEY: shard.model,
            },
        }
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            hint: float | None = None
            try:
                response = send_with_retry(
                    self.http,
                    lambda: self.http.build_request("POST", "/batches", json=body),
                    ONE_SHOT,
                    sleep=self.sleep,
                    clock=self.clock,
                    raise_for_status=False,
                )
            except ProviderError as exc:  # no answer: the batch may or may not exist
                failure: ProviderError = exc
            else:
                if response.is_success:
                    return parse_openai_batch(response.json(), self.provider)
                message, code = vendor_error(response)
                hint = parse_retry_after(response.headers)
                if code in QUEUE_FULL_CODES:
                    raise QueueFullError(
                        f"creating the batch for {intent_key} was refused: {message}",
                        status_code=response.status_code,
                        error_code=code,
                        retry_after=hint,
                    )
                failure_cls = QueueFullError if response.status_code == 429 else ProviderError
                failure = failure_cls(
                    f"POST /batches failed with HTTP {response.status_code}: {message}",
                    status_code=response.status_code,
                    error_code=code,
                    retry_after=hint,
                )
                if not self.retry.should_retry(response):
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
        """The batch whose metadata carries ``intent_key``, scanning list pages newest first."""
        for info in self.iter_batches(created_after=created_after, max_pages=max_pages):
            if info.metadata.get(INTENT_KEY) == intent_key:
                return info
        return None

    def iter_batches(
        self, *, created_after: datetime | None = None, max_pages: int = DEFAULT_MAX_PAGES
    ) -> Iterator[BatchInfo]:
        """``GET /batches`` page by page, newest first, stopping at batches older than ``created_after``."""
        return self._iter_list_pages(
            "/batches", cursor_param="after", parse=parse_openai_batch, created_after=created_after, max_pages=max_pages
        )

    def find_orphan_uploads(self, intent_key: str, *, keep: str | None = None) -> list[str]:
        """Ids of files uploaded for ``intent_key`` other than ``keep`` (the one the batch uses)."""
        wanted = upload_filename(intent_key)
        orphans: list[str] = []
        after: str | None = None
        for _ in range(DEFAULT_MAX_PAGES):
            params: dict[str, Any] = {"purpose": "batch", "limit": FILE_PAGE_LIMIT}
            if after:
                params["after"] = after
            page = self._json("GET", "/files", params=params)
            raw_data = page.get("data")
            data = raw_data if isinstance(raw_data, list) else []
            for item in data:
                if isinstance(item, dict) and item.get("filename") == wanted and item.get("id") != keep:
                    orphans.append(str(item["id"]))
            if not page.get("has_more") or not data:
                break
            after = page.get("last_id") or data[-1].get("id")
        return orphans

    def delete_file(self, file_id: str) -> None:
        try:
            self._send("DELETE", f"/files/{path_segment(file_id)}")
        except ProviderError as exc:
            if exc.status_code != 404:  # already gone is what we wanted
                raise

    # -- watch ---------------------------------------------------------------------------------
    def get(self, vendor_batch_id: str) -> BatchInfo:
        return parse_openai_batch(self._json("GET", f"/batches/{path_segment(vendor_batch_id)}"), self.provider)

    def cancel(self, vendor_batch_id: str) -> BatchInfo:
        return parse_openai_batch(self._json("POST", f"/batches/{path_segment(vendor_batch_id)}/cancel"), self.provider)

    # -- results ---------------------------------------------------------------------------------
    def reported_usage(self, info: BatchInfo) -> Usage | None:
        """The batch object's own usage totals (what the vendor bills), or None if it has none.

        Reconciliation compares it with the sum of the lines it could read: the difference is
        usage billed for lines it could not (cut short, unreadable) and is recorded, not hidden.
        """
        usage = info.raw.get("usage") if isinstance(info.raw, dict) else None
        if not isinstance(usage, dict):
            return None
        return openai_usage(
            {
                "prompt_tokens": usage.get("input_tokens"),
                "prompt_tokens_details": usage.get("input_tokens_details"),
                "completion_tokens": usage.get("output_tokens"),
                "completion_tokens_details": usage.get("output_tokens_details"),
            }
        )

    def download_results(self, info: BatchInfo, dest_dir: str | Path) -> ResultFiles:
        """The output and error files (either may be absent), streamed to ``dest_dir``."""
        dest = Path(dest_dir)
        output = (
            self.download(f"/files/{path_segment(info.output_file_id)}/content", dest / "output.jsonl")
            if info.output_file_id
            else None
        )
        errors = (
            self.download(f"/files/{path_segment(info.error_file_id)}/content", dest / "errors.jsonl")
            if info.error_file_id
            else None
        )
        return ResultFiles("openai", output, errors)
