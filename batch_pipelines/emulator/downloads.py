"""Streaming file downloads with ``Range: bytes=N-`` resumption and an injectable mid-stream drop."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from starlette.responses import Response, StreamingResponse

from batch_pipelines.emulator.errors import ApiError

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CHUNK = 1 << 20


class DroppedConnection(Exception):
    """Raised inside a download stream to cut the connection on purpose (a profile fault)."""


class QuietDrops(logging.Filter):
    """Keeps deliberate drops out of the server log: they are the feature, not a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        seen = 0
        while exc is not None and seen < 8:
            if isinstance(exc, DroppedConnection):
                return False
            group = getattr(exc, "exceptions", None)
            exc = group[0] if group else (exc.__cause__ or exc.__context__)
            seen += 1
        return True


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) for a single byte range, or None for the whole file."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match:
        raise ApiError(416, f"Unsupported Range header {header[:40]!r}; use 'bytes=N-' or 'bytes=N-M'.")
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    if start >= size or end < start:
        raise ApiError(
            416, f"Range start {start} is beyond the file's {size} bytes.", headers={"content-range": f"bytes */{size}"}
        )
    return start, min(end, size - 1)


def _read(path: Path, start: int, length: int, drop_after: int | None) -> Iterator[bytes]:
    sent = 0
    with open(path, "rb") as source:
        source.seek(start)
        while sent < length:
            want = min(_CHUNK, length - sent)
            if drop_after is not None:
                want = min(want, drop_after - sent)
                if want <= 0:
                    raise DroppedConnection("download cut off by the emulator's fault profile")
            chunk = source.read(want)
            if not chunk:
                break
            sent += len(chunk)
            yield chunk


def file_response(path: Path, range_header: str | None, *, drop_after: int | None, media_type: str) -> Response:
    size = path.stat().st_size
    span = parse_range(range_header, size) if size else None
    start, end = span if span else (0, size - 1)
    length = end - start + 1 if size else 0
    headers = {"content-length": str(length), "accept-ranges": "bytes"}
    status = 200
    if span:
        status = 206
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    if drop_after is not None and drop_after >= length:
        drop_after = None
    return StreamingResponse(
        _read(path, start, length, drop_after), status_code=status, headers=headers, media_type=media_type
    )
