"""The batch lane contract (``BatchLane``) and what every protocol's lane shares.

``BatchLane`` declares every call the services make on a batch lane: the abstract methods each
protocol must write, and explicit defaults for the capabilities only some vendors have (an
upload step, batch metadata to find an intent by, a way to find unrecorded batches, the
batch's own usage totals). The shared part: sending with the retry policy, paging a vendor's
batch list, resumable downloads, reading result files.

A download streams to ``<name>.part`` in chunks; when the stream breaks part-way it asks for
the rest with ``Range: bytes=N-`` (or starts over if the server ignores the range), bounded
by the retry policy's attempts and total time, and renames the file only once it is whole.
"""

from __future__ import annotations

import os
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import httpx

from batch_pipelines.core.batches import BatchInfo
from batch_pipelines.core.errors import MalformedResponseError, ProviderError
from batch_pipelines.core.outcomes import ItemOutcome
from batch_pipelines.core.usage import Usage
from batch_pipelines.providers.config import Protocol, ProviderConfig
from batch_pipelines.providers.http import shown_url
from batch_pipelines.providers.results_parsing import ParseReport, iter_outcomes
from batch_pipelines.providers.retry import RetryPolicy, send_with_retry
from batch_pipelines.providers.sharding import Shard

ONE_SHOT = RetryPolicy(max_attempts=1)
"""For calls that must not be repeated blindly (create): the lane decides what to do next."""

# A list route the server does not have: several OpenAI-compatible servers and gateways lack
# GET /batches or GET /files, which the vendors' own references treat as conveniences.
ROUTE_MISSING = frozenset({404, 405, 501})


@dataclass(frozen=True, slots=True)
class ResultFiles:
    """A batch's result files on disk, in reading order (answers before errors)."""

    protocol: Protocol
    output: Path | None = None
    errors: Path | None = None

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.output, self.errors) if p is not None]


def epoch_to_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def require_dict(payload: Any, what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise MalformedResponseError(f"{what} is not a JSON object", payload_type=type(payload).__name__)
    return payload


# Pages of a vendor's batch list read at most per scan, and batches per page (both vendors' max).
DEFAULT_MAX_PAGES = 50
PAGE_LIMIT = 100


class BatchLane(ABC):
    """A provider's batch lane: submit, watch and collect batches over one shared HTTP client.

    Every lane is built as ``(config, http, retry, sleep, clock)`` (see ``providers/lanes.py``).
    """

    protocol: ClassVar[Protocol]
    uses_files: ClassVar[bool] = False
    """Whether the protocol uploads an input file (``upload``) before creating the batch."""
    create_reattaches: ClassVar[bool] = True
    """Whether ``create`` itself finds the batch an unanswered attempt made (by intent key in the
    batch's metadata) and retries. False where batches carry no metadata (Anthropic): ``create``
    is sent once, and the caller, which holds the ledger, looks for an unrecorded batch of the
    shard's size before creating again."""

    def __init__(
        self,
        config: ProviderConfig,
        http: httpx.Client,
        retry: RetryPolicy,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.http = http
        self.retry = retry
        self.sleep = sleep
        self.clock = clock

    @property
    def provider(self) -> str:
        return self.config.name

    # -- the contract: what every protocol writes ------------------------------------------------
    @abstractmethod
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
        """Create the batch for ``shard`` (or return the one an earlier, unanswered attempt created)."""

    @abstractmethod
    def get(self, vendor_batch_id: str) -> BatchInfo:
        """One batch as the vendor sees it now."""

    @abstractmethod
    def cancel(self, vendor_batch_id: str) -> BatchInfo:
        """Ask the vendor to cancel; the answer is usually 'cancelling', not yet 'cancelled'."""

    @abstractmethod
    def iter_batches(
        self, *, created_after: datetime | None = None, max_pages: int = DEFAULT_MAX_PAGES
    ) -> Iterator[BatchInfo]:
        """The vendor's batch list, newest first, stopping at batches older than ``created_after``."""

    @abstractmethod
    def download_results(self, info: BatchInfo, dest_dir: str | Path) -> ResultFiles:
        """The batch's result files, streamed to ``dest_dir`` (none before the batch has any)."""

    # -- optional capabilities, with the default for a vendor that lacks them ----------------------
    def upload(self, shard: Shard, *, intent_key: str) -> str:
        """Upload the shard as the batch's input file; returns its id. Only a lane with
        ``uses_files`` is asked to (and overrides this); the others send requests inline."""
        raise NotImplementedError(f"{type(self).__name__} sends requests inline with create; it uploads no file")

    def find_by_intent(
        self, intent_key: str, *, created_after: datetime | None = None, max_pages: int = DEFAULT_MAX_PAGES
    ) -> BatchInfo | None:
        """The batch carrying ``intent_key`` in its metadata. Default: None (no batch metadata)."""
        return None

    def find_unrecorded(
        self, *, created_after: datetime, request_count: int, known_ids: Iterable[str] = ()
    ) -> list[BatchInfo]:
        """Batches since ``created_after`` of ``request_count`` requests that could be an intent's
        lost answer, for vendors without batch metadata. Default: none (``find_by_intent`` suffices)."""
        return []

    def find_orphan_uploads(self, intent_key: str, *, keep: str | None = None) -> list[str]:
        """Files uploaded for ``intent_key`` that no batch uses. Default: none (no uploads)."""
        return []

    def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file. Default: nothing to delete (no uploads)."""
        return None

    def reported_usage(self, info: BatchInfo) -> Usage | None:
        """The batch's own usage totals (what the vendor bills). Default: None (the vendor reports
        usage only per line); reconciliation then charges the lines it could read."""
        return None

    # -- HTTP --------------------------------------------------------------------------------
    def _send(self, method: str, url: str, *, policy: RetryPolicy | None = None, **kwargs: Any) -> httpx.Response:
        return send_with_retry(
            self.http,
            lambda: self.http.build_request(method, url, **kwargs),
            policy or self.retry,
            sleep=self.sleep,
            clock=self.clock,
        )

    def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, url, **kwargs)
        try:
            return require_dict(response.json(), f"{method} {httpx.URL(url).path} response")
        except ValueError:
            raise MalformedResponseError(
                f"{method} {httpx.URL(url).path} did not answer JSON", status_code=response.status_code
            ) from None

    # -- downloads -----------------------------------------------------------------------------
    def _iter_list_pages(
        self,
        path: str,
        *,
        cursor_param: str,
        parse: Callable[[Mapping[str, Any], str], BatchInfo],
        created_after: datetime | None,
        max_pages: int,
    ) -> Iterator[BatchInfo]:
        """A vendor's batch list, newest first, page by page, stopping at batches older than ``created_after``.

        Both vendors page the same way (``data``, ``has_more``, ``last_id``); only the cursor
        parameter's name differs (``after`` for OpenAI, ``after_id`` for Anthropic).
        """
        after: str | None = None
        for _ in range(max_pages):
            params: dict[str, Any] = {"limit": PAGE_LIMIT}
            if after:
                params[cursor_param] = after
            page = self._json("GET", path, params=params)
            data = page.get("data")
            if not isinstance(data, list):
                raise MalformedResponseError(f"the batch list at {path} has no data array")
            for item in data:
                info = parse(item, self.provider)
                if created_after is not None and info.created_at is not None and info.created_at < created_after:
                    return
                yield info
            if not page.get("has_more") or not data:
                return
            after = page.get("last_id") or data[-1].get("id")

    def poll(
        self,
        vendor_batch_ids: Iterable[str],
        *,
        created_after: datetime | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> dict[str, BatchInfo]:
        """Many batches at once: one call per list page, ``get`` only for ids the pages missed."""
        wanted = set(vendor_batch_ids)
        found: dict[str, BatchInfo] = {}
        if not wanted:
            return found
        try:
            for info in self.iter_batches(created_after=created_after, max_pages=max_pages):
                if info.vendor_batch_id in wanted:
                    found[info.vendor_batch_id] = info
                    if len(found) == len(wanted):
                        break
        except ProviderError as exc:
            if exc.status_code not in ROUTE_MISSING:
                raise
            # No list route on this server: one GET per batch still answers the question.
        for batch_id in sorted(wanted - found.keys()):
            found[batch_id] = self.get(batch_id)
        return found

    def download(self, url: str | httpx.URL, dest: Path) -> Path:
        """Stream ``url`` to ``dest``; a stream broken part-way resumes (Range) or restarts."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        part.unlink(missing_ok=True)
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                response = send_with_retry(
                    self.http,
                    partial(self.http.build_request, "GET", url, headers=headers),
                    self.retry,
                    sleep=self.sleep,
                    clock=self.clock,
                    stream=True,
                    raise_for_status=False,
                )
                try:
                    if have and response.status_code == 416:
                        break  # we already hold every byte; only the rename was missing
                    if not response.is_success:
                        response.read()
                        raise ProviderError(
                            f"GET {shown_url(response.request.url)} failed with HTTP {response.status_code}",
                            status_code=response.status_code,
                            url=shown_url(response.request.url),
                        )
                    resumed = have and response.status_code == 206
                    with open(part, "ab" if resumed else "wb") as handle:
                        # No chunk_size: a chunker would hold back bytes that arrived before a break.
                        for chunk in response.iter_bytes():
                            handle.write(chunk)
                finally:
                    response.close()
                break
            except httpx.TransportError as exc:  # the stream broke part-way: keep what arrived
                delay = self.retry.next_delay(
                    attempt=attempt, elapsed=self.clock() - started, hint=None, rand=random.random()
                )
                if delay is None:
                    raise ProviderError(
                        f"download of {shown_url(self.http.build_request('GET', url).url)} broke {attempt} time(s); "
                        f"giving up: {type(exc).__name__}",
                        status_code=None,
                        error_code="download_interrupted",
                        bytes_received=part.stat().st_size if part.exists() else 0,
                    ) from exc
                self.sleep(delay)
        os.replace(part, dest)
        return dest

    # -- results ---------------------------------------------------------------------------------
    def iter_outcomes(
        self,
        files: ResultFiles,
        expected_custom_ids: Iterable[str],
        *,
        model: str | None = None,
        report: ParseReport | None = None,
    ) -> Iterator[ItemOutcome]:
        """Every expected custom_id exactly once (see ``results_parsing``)."""
        return iter_outcomes(files.paths, expected_custom_ids, protocol=files.protocol, model=model, report=report)


def response_may_have_created(failure: ProviderError) -> bool:
    """No answer, or a server-side failure: the create may have happened anyway."""
    return failure.status_code is None or failure.status_code >= 500 or failure.status_code in (408, 409)


def metadata_of(payload: Mapping[str, Any]) -> dict[str, str]:
    raw = payload.get("metadata")
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v) for k, v in raw.items() if v is not None}
