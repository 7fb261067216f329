"""The batch lane of Anthropic Message Batches.

Requests travel inline in the create call (no upload), streamed from the shard file. There is
no batch metadata, so idempotency is ledger-first: the submit service records its intent
before calling ``create`` and the batch id right after. The one gap -- an answer lost between
the vendor creating the batch and the ledger recording it -- is closed by
``find_unrecorded``: batches created since the intent, with the shard's request count, that
the ledger does not know yet. ``find_by_intent`` is always None here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from batch_pipelines.core.batches import BatchInfo
from batch_pipelines.core.errors import MalformedResponseError, ProviderError, QueueFullError
from batch_pipelines.core.status import anthropic_status
from batch_pipelines.providers.batch_lane import (
    DEFAULT_MAX_PAGES,
    ONE_SHOT,
    BatchLane,
    ResultFiles,
    epoch_to_datetime,
    require_dict,
)
from batch_pipelines.providers.http import path_segment, vendor_error
from batch_pipelines.providers.retry import parse_retry_after, send_with_retry
from batch_pipelines.providers.sharding import Shard

BATCHES_PATH = "/v1/messages/batches"
_OPEN = b'{"requests":['
_CLOSE = b"]}"
_READ_BYTES = 1 << 20


def parse_anthropic_batch(payload: Any, provider: str) -> BatchInfo:
    """An Anthropic MessageBatch as a ``BatchInfo``."""
    data = require_dict(payload, "message batch")
    batch_id = data.get("id")
    processing = data.get("processing_status")
    if not isinstance(batch_id, str) or not isinstance(processing, str):
        raise MalformedResponseError("message batch has no id or processing_status", keys=sorted(data)[:20])
    raw_counts = data.get("request_counts")
    counts = raw_counts if isinstance(raw_counts, dict) else {}

    def count(name: str) -> int:
        value = counts.get(name)
        return value if isinstance(value, int) else 0

    status = anthropic_status(
        processing,
        cancel_initiated=bool(data.get("cancel_initiated_at")),
        succeeded=count("succeeded"),
        errored=count("errored"),
        canceled=count("canceled"),
        expired=count("expired"),
    )
    total = sum(count(k) for k in ("processing", "succeeded", "errored", "canceled", "expired"))
    ended = processing == "ended"
    return BatchInfo(
        provider=provider,
        vendor_batch_id=batch_id,
        status=status,
        vendor_status=processing,
        endpoint="/v1/messages",
        total=total,
        # Anthropic reports progress only once the batch ends.
        completed=count("succeeded") if ended else None,
        failed=count("errored") if ended else None,
        results_url=data.get("results_url"),
        created_at=epoch_to_datetime(data.get("created_at")),
        expires_at=epoch_to_datetime(data.get("expires_at")),
        ended_at=epoch_to_datetime(data.get("ended_at")),
        raw=data,
    )


def _request_stream(path: Path) -> Iterator[bytes]:
    """``{"requests":[line,line,...]}`` from the shard's JSONL, a block at a time."""
    yield _OPEN
    first = True
    with open(path, "rb") as handle:
        while block := handle.read(_READ_BYTES):
            block += handle.readline()  # end every block on a line boundary
            lines = block.rstrip(b"\n").replace(b"\n", b",")
            yield lines if first else b"," + lines
            first = False
    yield _CLOSE


class AnthropicBatchLane(BatchLane):
    protocol = "anthropic"
    uses_files = False
    create_reattaches = False  # no metadata: the submit service looks before a second create

    # -- submit ------------------------------------------------------------------------------
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
        """One create call, never repeated here: after no answer the caller consults the ledger
        and ``find_unrecorded`` before trying again (the vendor cannot be asked by intent key)."""
        length = len(_OPEN) + shard.byte_size - 1 + len(_CLOSE) if shard.request_count else len(_OPEN) + len(_CLOSE)
        response = send_with_retry(
            self.http,
            lambda: self.http.build_request(
                "POST",
                BATCHES_PATH,
                content=_request_stream(shard.path),
                headers={"content-type": "application/json", "content-length": str(length)},
            ),
            ONE_SHOT,
            sleep=self.sleep,
            clock=self.clock,
            raise_for_status=False,
        )
        if response.is_success:
            return parse_anthropic_batch(response.json(), self.provider)
        message, code = vendor_error(response)
        error_cls = QueueFullError if response.status_code == 429 else ProviderError
        raise error_cls(
            f"POST {BATCHES_PATH} failed with HTTP {response.status_code}: {message}",
            status_code=response.status_code,
            error_code=code,
            retry_after=parse_retry_after(response.headers),
            retryable=self.retry.should_retry(response),
        )

    def find_unrecorded(
        self, *, created_after: datetime, request_count: int, known_ids: Iterable[str] = ()
    ) -> list[BatchInfo]:
        """Batches created since ``created_after`` holding ``request_count`` requests, minus ``known_ids``."""
        known = set(known_ids)
        return [
            info
            for info in self.iter_batches(created_after=created_after)
            if info.total == request_count and info.vendor_batch_id not in known
        ]

    def iter_batches(
        self, *, created_after: datetime | None = None, max_pages: int = DEFAULT_MAX_PAGES
    ) -> Iterator[BatchInfo]:
        """The list endpoint, newest first, stopping at batches older than ``created_after``."""
        return self._iter_list_pages(
            BATCHES_PATH,
            cursor_param="after_id",
            parse=parse_anthropic_batch,
            created_after=created_after,
            max_pages=max_pages,
        )

    # -- watch ---------------------------------------------------------------------------------
    def get(self, vendor_batch_id: str) -> BatchInfo:
        return parse_anthropic_batch(
            self._json("GET", f"{BATCHES_PATH}/{path_segment(vendor_batch_id)}"), self.provider
        )

    def cancel(self, vendor_batch_id: str) -> BatchInfo:
        return parse_anthropic_batch(
            self._json("POST", f"{BATCHES_PATH}/{path_segment(vendor_batch_id)}/cancel"), self.provider
        )

    # -- results ---------------------------------------------------------------------------------
    def download_results(self, info: BatchInfo, dest_dir: str | Path) -> ResultFiles:
        """The results JSONL (only once the batch ended; before that there is none).

        ``results_url`` is resolved per RFC 3986 against the batch's own URL, so a root-relative
        ``/v1/...`` is relative to the host, not appended to a base URL's path prefix. Anthropic's
        reference says not to assume its form; when it 404s, or points at another host (our key
        goes only to the configured one), the documented route under the base URL is used.
        """
        if not info.results_url:
            return ResultFiles("anthropic")
        dest = Path(dest_dir) / "results.jsonl"
        documented = f"{BATCHES_PATH}/{path_segment(info.vendor_batch_id)}/results"
        batch_url = self.http.build_request("GET", f"{BATCHES_PATH}/{path_segment(info.vendor_batch_id)}").url
        resolved = batch_url.join(info.results_url)
        if not _same_origin(resolved, batch_url):
            return ResultFiles("anthropic", self.download(documented, dest))
        try:
            return ResultFiles("anthropic", self.download(resolved, dest))
        except ProviderError as exc:
            if exc.status_code != 404 or resolved == self.http.build_request("GET", documented).url:
                raise
        return ResultFiles("anthropic", self.download(documented, dest))


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)
