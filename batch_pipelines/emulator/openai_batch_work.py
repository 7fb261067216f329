"""The work of an OpenAI batch, done off the request path: check every line and answer it.

Answering is the emulator's expensive part (50,000 lines of ~9 KB take seconds). Done inside the
first read after the virtual clock passed a batch's validation, it made one list call at
1,000,000 lines take over a minute, past Dagster's 60 s sensor limit. So each batch's lines
are worked through by one background thread as soon as the batch is created, in creation
order (which keeps the prompt cache's view of earlier prefixes the same as before). A read
then only admits finished work at its moment on the virtual clock, which is cheap, and waits a
bounded moment for unfinished work: a batch whose work is not done yet stays ``validating``,
as a real provider's batch would.

The answers are written to pending work files (output and error lines) with a per-line table
of kind, size and usage; processing later only moves counters and offsets through that table.
"""

from __future__ import annotations

import queue
import threading
from array import array
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batch_pipelines.emulator import accounting
from batch_pipelines.emulator.errors import ApiError
from batch_pipelines.emulator.faults import LineDraws, weighted_choice
from batch_pipelines.emulator.profile import Profile
from batch_pipelines.emulator.responses import Responder

MAX_LINES = 50_000
MAX_INPUT_BYTES = 200 * 1024 * 1024
MAX_EMBEDDING_INPUTS = 50_000
MAX_REPORTED_ERRORS = 100

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
_MALFORMED_TAIL = 40  # bytes of a good line kept when writing a deliberately broken one


@dataclass
class PreparedBatch:
    """What the pass over a batch's input found: its model, its line count and prompt tokens, or its errors."""

    model: str | None = None
    count: int = 0
    prompt_tokens: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


def prepare(work: Path, record: Mapping[str, Any], responder: Responder) -> PreparedBatch:
    """One pass over the input: check every line and, while no line is wrong, answer it.

    Reads only the fields a batch is created with (id, seq, endpoint, created_at, profile) and
    writes only inside ``work``, so it runs without the store's lock.
    """
    path = work / "input.jsonl"
    prepared = PreparedBatch()
    errors = prepared.errors

    def fail(code: str, message: str, line: int | None = None, param: str | None = None) -> None:
        if len(errors) < MAX_REPORTED_ERRORS:
            errors.append({"code": code, "message": message, "param": param, "line": line})

    size = path.stat().st_size
    endpoint = record["endpoint"]
    writer = _PendingWriter(work)
    answerer = _LineAnswerer(responder, record, writer)
    model: str | None = None
    embedding_inputs = 0
    count = 0
    if size > MAX_INPUT_BYTES:
        fail("file_too_large", f"The input file is {size} bytes; the limit is {MAX_INPUT_BYTES} bytes.")
    elif _too_many_lines(path):
        # Refused before answering 50,000 lines that would be thrown away.
        fail("too_many_requests", f"The input file holds more than {MAX_LINES} requests.", MAX_LINES + 1)
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
                        f"Line {number} uses model {body['model']!r}; this batch uses {model!r}. One model per batch.",
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
    if not errors:
        writer.save_table()
    prepared.model = model
    prepared.count = count
    prepared.prompt_tokens = answerer.prompt_tokens
    return prepared


def _too_many_lines(path: Path) -> bool:
    """Whether the file holds more than MAX_LINES non-blank lines (newlines counted first: cheap)."""
    newlines = 0
    with open(path, "rb") as source:
        while chunk := source.read(8 << 20):
            newlines += chunk.count(b"\n")
    if newlines < MAX_LINES:
        return False
    with open(path, "rb") as source:
        return sum(1 for line in source if line.strip()) > MAX_LINES


class BatchWorker:
    """One daemon thread that prepares batches in the order they were created.

    A daemon, so an emulator stopped with work queued exits at once instead of answering
    lines nobody will read.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[PreparedBatch], Callable[[], PreparedBatch]]] = queue.SimpleQueue()
        self._jobs: dict[str, Future[PreparedBatch]] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, batch_id: str, work: Callable[[], PreparedBatch]) -> None:
        future: Future[PreparedBatch] = Future()
        with self._lock:
            self._jobs[batch_id] = future
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="emulator-batch-worker", daemon=True)
                self._thread.start()
        self._queue.put((future, work))

    def has(self, batch_id: str) -> bool:
        return batch_id in self._jobs

    def wait(self, batch_id: str, timeout: float) -> PreparedBatch | None:
        """The batch's prepared work, waiting at most ``timeout`` seconds; None if not done by then."""
        future = self._jobs[batch_id]
        if not future.done():
            try:
                future.result(timeout=max(timeout, 0.0))
            except TimeoutError:
                return None
        del self._jobs[batch_id]
        return future.result()  # re-raises a failed preparation in the reading request

    def discard(self, batch_id: str, cleanup: Callable[[], None]) -> None:
        """Forget a batch's work (it was cancelled); ``cleanup`` runs once the work has stopped."""
        future = self._jobs.pop(batch_id, None)
        if future is None or future.cancel():  # never started: nothing is writing
            cleanup()
            return
        future.add_done_callback(lambda _: cleanup())

    def _run(self) -> None:
        while True:
            future, work = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:  # surfaced to the reader by wait()
                future.set_exception(exc)


def _embedding_input_count(body: dict[str, Any]) -> int:
    value = body.get("input")
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


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

    def __init__(self, responder: Responder, record: Mapping[str, Any], writer: _PendingWriter) -> None:
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
