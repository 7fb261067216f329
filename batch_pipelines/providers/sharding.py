"""Split a stream of requests into provider batch input files ("shards") under every cap.

A shard holds one model and one endpoint, and stays under the smallest of: the request cap,
90% of the byte cap, the embedding-input cap, and the model's enqueued-token budget (the
rules, pure, are in ``core/shard_rules.py``; this module writes the protocol's JSONL lines).

Requests whose prompts start with the same long system prompt are routed to the same
*bucket*, so they land in the same shard (or in consecutive shards when there are more of
them than a shard holds) and the vendor's prompt cache can hit. A bucket is a chain of chunk
files on disk: when a chunk reaches a cap it is closed and becomes a shard as it is, with no
second copy. At the end, the one partly filled chunk of each bucket (its "tail") is packed
with the other tails of the same model and endpoint into as few shards as the caps allow.

Memory stays bounded whatever the job size: lines are buffered per bucket up to a small
threshold and handed, in order, to one writer thread that appends them to the chunk file and
feeds the shard's fingerprint (CRC-32); the file writes and the checksum release the GIL, so
they overlap with serialising the next requests on another core.

Everything is deterministic in the input order: the same requests give the same shards, the
same bytes and the same fingerprints, which is what makes a retried submit find its own work.
Custom ids must be unique in a partition: ``submit_partition`` checks that across the whole
partition, and by default the sharder also refuses a duplicate inside one shard.

Over 450 lines on purpose: one concept (requests streamed into capped shard files) whose two
phases share the chunk state and the writer thread; split, that state would cross modules.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.core.requests import Endpoint, LLMRequest
from batch_pipelines.core.shard_rules import DEFAULT_MIN_PREFIX_CHARS, ShardLimits, prefix_slot, shared_prefix
from batch_pipelines.providers.config import Protocol

# ``core.tokens`` loads a 200k-entry vocabulary when imported (seconds, ~100 MB): it is imported
# only when a shard really needs token counts (a token budget or embedding inputs).

_FLUSH_BYTES = 1 << 20
_MAX_PENDING_BYTES = 64 << 20
_MAX_QUEUED_WRITES = 8
_COPY_BLOCK = 1 << 20
_PROTOCOL_ENDPOINTS: Mapping[str, frozenset[Endpoint]] = {
    "openai": frozenset({Endpoint.CHAT, Endpoint.EMBEDDINGS}),
    "anthropic": frozenset({Endpoint.MESSAGES}),
    # Gemini shards are written in the OpenAI line shape; its lane rewrites them on upload.
    "gemini": frozenset({Endpoint.CHAT, Endpoint.EMBEDDINGS}),
}
# Every line starts with this, which lets us read the custom_id back without parsing JSON.
_ID_PREFIX = b'{"custom_id":"'
_NO_MESSAGES = (None,)


@dataclass(frozen=True, slots=True)
class Shard:
    """One batch input file on disk: one model, one endpoint, under every cap."""

    index: int
    model: str
    endpoint: Endpoint
    protocol: Protocol
    path: Path
    request_count: int
    byte_size: int
    estimated_tokens: int
    """Prompt tokens: an exact o200k count when the model has a token budget, else bytes / 4."""
    embedding_inputs: int
    fingerprint: str
    """Identifies the shard's content (protocol, model, endpoint, bytes); see ``ContentDigest``."""

    def iter_custom_ids(self) -> Iterator[str]:
        """The shard's custom ids in file order, read back from the file."""
        start = len(_ID_PREFIX)
        with open(self.path, "rb") as handle:
            for line in handle:
                yield line[start : line.index(b'"', start)].decode("ascii")

    def custom_ids(self) -> list[str]:
        return list(self.iter_custom_ids())


def encode_line(request: LLMRequest, protocol: Protocol = "openai") -> bytes:
    """The request as one JSONL line of the protocol's batch input (newline included)."""
    body = request.body
    if body.get("model") != request.model:
        body = {**body, "model": request.model}
    if protocol == "anthropic":
        payload = {"custom_id": request.custom_id, "params": body}
    else:
        payload = {"custom_id": request.custom_id, "method": "POST", "url": request.endpoint.value, "body": body}
    try:
        return orjson.dumps(payload, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError as exc:  # orjson.JSONEncodeError: a lone surrogate, a NaN key, an object
        raise unserialisable(request.custom_id, exc) from None


def unserialisable(custom_id: str, exc: TypeError) -> InvalidInputError:
    """The request cannot be written as JSON (a string that is not valid UTF-8, an object, ...)."""
    return InvalidInputError(
        f"request {custom_id!r} cannot be sent: its body is not valid JSON ({exc}); nothing was sent",
        custom_id=custom_id,
    )


def _embedding_inputs(body: Mapping[str, Any]) -> int:
    from batch_pipelines.core.tokens import embedding_input_count

    return embedding_input_count(dict(body))


class ContentDigest:
    """The shard fingerprint: sha256 of a header, the byte count and a running CRC-32 of the bytes.

    Measured on 1M requests, sha256 over every byte cost as much as everything else the
    sharder does per request; CRC-32 runs at about twice its speed. The fingerprint has to tell
    apart the shards of one partition (their custom ids differ, so their bytes do) and notice an
    edited input; it does not have to resist a forger. Independent of how the bytes are fed.
    """

    __slots__ = ("header", "crc", "size")

    def __init__(self, header: bytes) -> None:
        self.header = header
        self.crc = 0
        self.size = 0

    def update(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)

    def hexdigest(self) -> str:
        return hashlib.sha256(self.header + f"{self.size}:{self.crc:08x}".encode()).hexdigest()


class _Chunk:
    """A shard in the making: its counters here, its bytes handed to the writer thread."""

    __slots__ = ("path", "count", "nbytes", "tokens", "embeddings", "hasher", "pending", "flushed", "ids")

    def __init__(self, path: Path, header: bytes) -> None:
        self.path = path
        self.count = 0
        self.nbytes = 0
        self.tokens = 0
        self.embeddings = 0
        self.hasher = ContentDigest(header)
        self.pending: list[bytes] = []
        self.flushed = 0
        """Bytes already handed to the writer thread."""
        self.ids: set[str] = set()


@dataclass
class _Lane:
    """All the buckets of one model and endpoint."""

    model: str
    endpoint: Endpoint
    url: str
    header: bytes
    token_limit: int | None
    count_embeddings: bool
    buckets: dict[int, _Chunk] = field(default_factory=dict)
    metered: bool = field(init=False)
    """A token budget or an embedding-input cap applies: each request must be measured."""

    def __post_init__(self) -> None:
        self.metered = self.token_limit is not None or self.count_embeddings


class _Sharder:
    def __init__(
        self, limits: ShardLimits, work_dir: Path, protocol: Protocol, min_prefix_chars: int, check_ids: bool
    ) -> None:
        self.limits = limits
        self.check_ids = check_ids
        self.work_dir = work_dir
        self.spill_dir = work_dir / "spill"
        self.protocol = protocol
        self.min_prefix_chars = min_prefix_chars
        self.lanes: dict[tuple[str, Endpoint], _Lane] = {}
        self.closed: list[tuple[_Lane, _Chunk]] = []
        self.chunk_seq = 0
        self.slot_of_prefix: dict[str, int] = {}
        self.token_cache: dict[str, int] = {}
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self.queued: deque[Future[None]] = deque()

    # -- the writer thread ------------------------------------------------------------------
    @staticmethod
    def _append(path: Path, data: bytes, hasher: Any) -> None:
        with open(path, "ab") as handle:
            handle.write(data)
        hasher.update(data)

    def _flush(self, chunk: _Chunk) -> None:
        if not chunk.pending:
            return
        data = b"".join(chunk.pending)
        chunk.pending = []
        chunk.flushed = chunk.nbytes
        self.queued.append(self.writer.submit(self._append, chunk.path, data, chunk.hasher))
        while len(self.queued) > _MAX_QUEUED_WRITES:
            self.queued.popleft().result()  # back-pressure, and surfaces a failed write

    def _drain(self) -> None:
        while self.queued:
            self.queued.popleft().result()

    def _flush_all(self) -> None:
        for lane in self.lanes.values():
            for chunk in lane.buckets.values():
                self._flush(chunk)

    # -- routing ------------------------------------------------------------------------------
    def _lane(self, request: LLMRequest) -> _Lane:
        if request.endpoint not in _PROTOCOL_ENDPOINTS[self.protocol]:
            raise InvalidInputError(
                f"request {request.custom_id!r} targets {request.endpoint.value}, which the {self.protocol} "
                f"batch protocol does not serve",
                custom_id=request.custom_id,
                endpoint=request.endpoint.value,
            )
        header = f"{self.protocol}\n{request.model}\n{request.endpoint.value}\n".encode()
        lane = _Lane(
            model=request.model,
            endpoint=request.endpoint,
            url=request.endpoint.value,
            header=header,
            token_limit=self.limits.token_limit(request.model),
            count_embeddings=request.endpoint is Endpoint.EMBEDDINGS and self.limits.max_embedding_inputs is not None,
        )
        self.lanes[(request.model, request.endpoint)] = lane
        return lane

    def _slot(self, prefix: str) -> int:
        slot = prefix_slot(prefix)
        if len(self.slot_of_prefix) > 4096:
            self.slot_of_prefix.clear()
        self.slot_of_prefix[prefix] = slot
        return slot

    def _new_chunk(self, lane: _Lane) -> _Chunk:
        self.chunk_seq += 1
        return _Chunk(self.spill_dir / f"chunk-{self.chunk_seq:06d}.jsonl", lane.header)

    def _tokens(self, lane: _Lane, body: Mapping[str, Any]) -> int:
        from batch_pipelines.core.tokens import count_chat_prompt, count_embedding_input

        if lane.endpoint is Endpoint.EMBEDDINGS:
            return count_embedding_input(dict(body))
        prefix = shared_prefix(body, self.min_prefix_chars)
        if prefix is None:
            return count_chat_prompt(dict(body))
        # The shared system prompt is counted once per process, the rest per request.
        cached = self.token_cache.get(prefix)
        if cached is None:
            cached = count_chat_prompt({"messages": [{"content": prefix}]})
            if len(self.token_cache) > 1024:
                self.token_cache.clear()
            self.token_cache[prefix] = cached
        rest = dict(body)
        if "system" in rest:
            rest.pop("system")
        else:
            rest["messages"] = list(rest.get("messages") or ())[1:]
        return cached + count_chat_prompt(rest)

    def _refuse(self, request: LLMRequest, what: str) -> InvalidInputError:
        return InvalidInputError(
            f"request {request.custom_id!r} alone exceeds the batch {what}; it cannot be sent in any batch",
            custom_id=request.custom_id,
        )

    # -- phase 1: stream requests into bucket chunks --------------------------------------------
    def add_all(self, requests: Iterable[LLMRequest]) -> None:
        limits = self.limits
        max_requests = limits.max_requests
        byte_limit = limits.byte_limit
        max_embeddings = limits.max_embedding_inputs or 0
        lanes = self.lanes
        anthropic = self.protocol == "anthropic"
        dumps = orjson.dumps
        newline = orjson.OPT_APPEND_NEWLINE
        min_prefix_chars = self.min_prefix_chars
        slot_of_prefix = self.slot_of_prefix
        check_ids = self.check_ids
        last_head: Any = None  # identity cache: bodies built from one template share the system message
        last_prefix: str | None = None
        lane: _Lane | None = None
        for request in requests:
            # Runs of one model and endpoint are the norm: skip the lookup (and Enum.__hash__).
            if lane is None or request.model != lane.model or request.endpoint is not lane.endpoint:
                lane = lanes.get((request.model, request.endpoint)) or self._lane(request)
            body = request.body
            if body.get("model") != lane.model:
                body = {**body, "model": lane.model}
            custom_id = request.custom_id
            if anthropic:
                payload = {"custom_id": custom_id, "params": body}
            else:
                payload = {"custom_id": custom_id, "method": "POST", "url": lane.url, "body": body}
            try:
                line = dumps(payload, option=newline)  # the same bytes as encode_line()
            except TypeError as exc:
                raise unserialisable(custom_id, exc) from None
            size = len(line)

            head = body.get("system") or (body.get("messages") or _NO_MESSAGES)[0]
            if head is not last_head or head is None:
                last_prefix = shared_prefix(body, min_prefix_chars)
                last_head = head
            prefix = last_prefix
            if prefix is None:
                slot = -1
            else:
                slot = slot_of_prefix.get(prefix, -2)
                if slot == -2:
                    slot = self._slot(prefix)
            chunk = lane.buckets.get(slot)
            if chunk is None:
                chunk = lane.buckets[slot] = self._new_chunk(lane)

            if lane.metered:  # token budget or embedding-input cap: the slower, exact path
                tokens = self._tokens(lane, body) if lane.token_limit is not None else 0
                embeddings = _embedding_inputs(body) if lane.count_embeddings else 0
                full = (lane.token_limit is not None and chunk.tokens + tokens > lane.token_limit) or (
                    embeddings and chunk.embeddings + embeddings > max_embeddings
                )
            else:
                tokens = embeddings = 0
                full = False
            if full or chunk.count >= max_requests or chunk.nbytes + size > byte_limit:
                if chunk.count == 0:
                    what = (
                        "byte cap"
                        if size > byte_limit
                        else "embedding-input cap"
                        if embeddings > max_embeddings
                        else (f"enqueued-token budget of {lane.token_limit} for {lane.model}")
                    )
                    raise self._refuse(request, what)
                self._close(lane, chunk)
                chunk = lane.buckets[slot] = self._new_chunk(lane)
            if check_ids:
                ids = chunk.ids
                ids.add(custom_id)
                if len(ids) == chunk.count:
                    raise InvalidInputError(f"custom_id {custom_id!r} appears twice", custom_id=custom_id)
            chunk.count += 1
            chunk.nbytes += size
            if tokens or embeddings:
                chunk.tokens += tokens
                chunk.embeddings += embeddings
            chunk.pending.append(line)
            if chunk.nbytes - chunk.flushed >= _FLUSH_BYTES:
                self._flush(chunk)
                if self._pending_total() >= _MAX_PENDING_BYTES:
                    self._flush_all()

    def _pending_total(self) -> int:
        return sum(c.nbytes - c.flushed for lane in self.lanes.values() for c in lane.buckets.values())

    def _close(self, lane: _Lane, chunk: _Chunk) -> None:
        self._flush(chunk)
        chunk.ids = set()
        self.closed.append((lane, chunk))

    # -- phase 2: pack the tails, name the shards ------------------------------------------------
    def finish(self) -> list[Shard]:
        self._flush_all()
        self._drain()
        self.writer.shutdown(wait=True)
        shards: list[Shard] = []
        for lane, chunk in self.closed:
            shards.append(self._publish(len(shards), lane, chunk))
        for lane in self.lanes.values():
            pack: list[_Chunk] = []
            for chunk in lane.buckets.values():
                if chunk.count == 0:
                    continue
                if pack and not self._fits(lane, pack, chunk):
                    shards.append(self._publish_pack(len(shards), lane, pack))
                    pack = []
                pack.append(chunk)
            if pack:
                shards.append(self._publish_pack(len(shards), lane, pack))
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        return shards

    def _fits(self, lane: _Lane, pack: list[_Chunk], chunk: _Chunk) -> bool:
        limits = self.limits
        if sum(c.count for c in pack) + chunk.count > limits.max_requests:
            return False
        if sum(c.nbytes for c in pack) + chunk.nbytes > limits.byte_limit:
            return False
        if lane.token_limit is not None and sum(c.tokens for c in pack) + chunk.tokens > lane.token_limit:
            return False
        if lane.count_embeddings and sum(c.embeddings for c in pack) + chunk.embeddings > (
            limits.max_embedding_inputs or 0
        ):
            return False
        if not self.check_ids:
            return True
        # Two tails of one pack must not share a custom id (each tail was checked on its own).
        seen: set[str] = set()
        for other in pack:
            seen |= other.ids
        duplicate = next(iter(seen & chunk.ids), None)
        if duplicate is not None:
            raise InvalidInputError(f"custom_id {duplicate!r} appears twice", custom_id=duplicate)
        return True

    def _shard_path(self, index: int) -> Path:
        return self.work_dir / f"shard-{index:05d}.jsonl"

    def _publish(self, index: int, lane: _Lane, chunk: _Chunk) -> Shard:
        path = self._shard_path(index)
        os.replace(chunk.path, path)
        return self._shard(index, lane, path, [chunk], chunk.hasher.hexdigest())

    def _publish_pack(self, index: int, lane: _Lane, pack: list[_Chunk]) -> Shard:
        if len(pack) == 1:
            return self._publish(index, lane, pack[0])
        path = self._shard_path(index)
        hasher = ContentDigest(lane.header)
        with open(path, "wb") as out:
            for chunk in pack:
                with open(chunk.path, "rb") as source:
                    while block := source.read(_COPY_BLOCK):
                        out.write(block)
                        hasher.update(block)
                os.unlink(chunk.path)
        return self._shard(index, lane, path, pack, hasher.hexdigest())

    def _shard(self, index: int, lane: _Lane, path: Path, chunks: list[_Chunk], fingerprint: str) -> Shard:
        nbytes = sum(c.nbytes for c in chunks)
        tokens = sum(c.tokens for c in chunks) if lane.token_limit is not None else nbytes // 4
        return Shard(
            index=index,
            model=lane.model,
            endpoint=lane.endpoint,
            protocol=self.protocol,
            path=path,
            request_count=sum(c.count for c in chunks),
            byte_size=nbytes,
            estimated_tokens=tokens,
            embedding_inputs=sum(c.embeddings for c in chunks),
            fingerprint=fingerprint,
        )

    def abort(self) -> None:
        self.writer.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.spill_dir, ignore_errors=True)


def shard_requests(
    requests: Iterable[LLMRequest],
    limits: ShardLimits,
    work_dir: str | os.PathLike[str],
    *,
    protocol: Protocol = "openai",
    min_prefix_chars: int = DEFAULT_MIN_PREFIX_CHARS,
    check_unique_ids: bool = True,
) -> list[Shard]:
    """Stream ``requests`` into shard files under ``work_dir`` (earlier shards there are replaced).

    Shards come out full ones first (in the order they filled), then the packed remainders,
    model by model in first-seen order. Raises ``InvalidInputError`` for a request that fits no
    batch, an endpoint the protocol does not serve, or a custom id repeated within a shard
    (``check_unique_ids=False`` skips that check for callers that already made ids unique
    across the whole partition, as ``submit_partition`` does).
    """
    if protocol not in _PROTOCOL_ENDPOINTS:
        raise ValueError(f"unknown batch protocol {protocol!r}")
    root = Path(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("shard-*.jsonl"):
        old.unlink()
    sharder = _Sharder(limits, root, protocol, min_prefix_chars, check_unique_ids)
    shutil.rmtree(sharder.spill_dir, ignore_errors=True)
    sharder.spill_dir.mkdir()
    try:
        sharder.add_all(requests)
        return sharder.finish()
    except BaseException:
        sharder.abort()
        raise


def split_shard(shard: Shard, parts: int = 2) -> list[Shard]:
    """``shard`` cut into ``parts`` shards of consecutive lines (for a queue that refused it whole).

    The pieces keep the shard's model, endpoint and order; each gets its own fingerprint. Token
    estimates are shared out by line count.
    """
    if parts < 2 or shard.request_count < parts:
        raise ValueError(f"cannot split a shard of {shard.request_count} request(s) into {parts} parts")
    header = f"{shard.protocol}\n{shard.model}\n{shard.endpoint.value}\n".encode()
    per_part = -(-shard.request_count // parts)
    pieces: list[Shard] = []
    with open(shard.path, "rb") as source:
        for part in range(parts):
            path = shard.path.with_name(f"{shard.path.stem}-{part + 1}of{parts}.jsonl")
            hasher = ContentDigest(header)
            count = nbytes = embeddings = 0
            with open(path, "wb") as out:
                for line in source:
                    out.write(line)
                    hasher.update(line)
                    count += 1
                    nbytes += len(line)
                    if shard.endpoint is Endpoint.EMBEDDINGS:
                        embeddings += _embedding_inputs(orjson.loads(line).get("body") or {})
                    if count == per_part:
                        break
            if count == 0:
                path.unlink()
                break
            pieces.append(
                Shard(
                    index=shard.index,
                    model=shard.model,
                    endpoint=shard.endpoint,
                    protocol=shard.protocol,
                    path=path,
                    request_count=count,
                    byte_size=nbytes,
                    estimated_tokens=shard.estimated_tokens * count // shard.request_count,
                    embedding_inputs=embeddings,
                    fingerprint=hasher.hexdigest(),
                )
            )
    return pieces
