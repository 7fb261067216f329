"""Gemini's Files API: resumable uploads, file objects, and generated (batch output) files.

A resumable upload is two legs (Google's protocol, as the google-genai SDK drives it): a
``start`` call with the API key answers an upload URL in ``X-Goog-Upload-URL``; the bytes then
go to that URL in ``upload`` commands at increasing ``X-Goog-Upload-Offset``, the last one
``upload, finalize``. The URL's ``upload_id`` is the credential of the second leg, which
carries no API key. Only generated files (batch results) can be downloaded.

State lives under ``<state>/gemini/files``: ``<id>.json`` (the record), ``<id>.data`` (bytes)
and ``<upload_id>.part`` for uploads in flight.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import orjson

from batch_pipelines.emulator.clock import VirtualClock
from batch_pipelines.emulator.errors import ApiError
from batch_pipelines.emulator.gemini_wire import API_VERSION, field, timestamp
from batch_pipelines.emulator.state import Store, write_json_atomic

FILE_ID = re.compile(r"^[a-z0-9]{1,40}$")
UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MAX_FILE_BYTES = 2 * 1024**3
RETENTION_SECONDS = 48 * 3600
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
CHUNK_GRANULARITY = 8 * 1024 * 1024


def not_found(name: str) -> ApiError:
    return ApiError(404, f"File {name} does not exist or you do not have permission to access it.")


class GeminiFiles:
    def __init__(self, store: Store, clock: VirtualClock) -> None:
        self.store = store
        self.clock = clock
        self.root = store.root / "gemini" / "files"
        self.root.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict[str, Any]] = {}
        for path in self.root.glob("*.json"):
            if FILE_ID.match(path.stem):
                self.records[path.stem] = orjson.loads(path.read_bytes())
        self._uploads: dict[str, dict[str, Any]] = {}

    # -- resumable upload ------------------------------------------------------------------

    def start_upload(self, payload: Any, declared_size: str | None, mime_type: str | None) -> str:
        """Begin an upload; returns the ``upload_id`` the upload URL carries."""
        if declared_size is None or not declared_size.isdigit():
            raise ApiError(400, "X-Goog-Upload-Header-Content-Length is required for a resumable upload.")
        size = int(declared_size)
        if size > MAX_FILE_BYTES:
            raise ApiError(400, f"File is {size} bytes; the limit is {MAX_FILE_BYTES} bytes (2 GB).")
        meta = payload.get("file") if isinstance(payload, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        name = meta.get("name")
        file_id = name.removeprefix("files/") if isinstance(name, str) and name else None
        if file_id is not None and (not FILE_ID.match(file_id) or file_id in self.records):
            raise ApiError(400, f"Invalid or taken file name {name!r}.")
        upload_id = secrets.token_urlsafe(24)
        self._uploads[upload_id] = {
            "file_id": file_id,
            "display_name": field(meta, "displayName"),
            "mime_type": field(meta, "mimeType") or mime_type or "application/octet-stream",
            "size": size,
            "received": 0,
        }
        (self.root / f"{upload_id}.part").write_bytes(b"")
        return upload_id

    def upload_chunk(self, upload_id: str, command: str, offset: str | None, data: bytes) -> dict[str, Any] | None:
        """Append one chunk; returns the File once the upload is finalized, else None."""
        upload = self._uploads.get(upload_id) if UPLOAD_ID.match(upload_id) else None
        if upload is None:
            raise ApiError(404, "No upload session with this upload_id (it may have finished or never begun).")
        commands = {c.strip() for c in command.split(",") if c.strip()}
        if commands == {"query"}:
            return None
        if not commands or not commands <= {"upload", "finalize"}:
            raise ApiError(400, f"Unsupported X-Goog-Upload-Command {command!r}.")
        if "upload" in commands:
            if offset is None or not offset.isdigit() or int(offset) != upload["received"]:
                raise ApiError(
                    400, f"X-Goog-Upload-Offset is {offset!r}; this upload has received {upload['received']} bytes."
                )
            if upload["received"] + len(data) > upload["size"]:
                raise ApiError(400, f"The upload sends more than the {upload['size']} bytes it declared.")
            with open(self.root / f"{upload_id}.part", "ab") as out:
                out.write(data)
            upload["received"] += len(data)
        if "finalize" not in commands:
            return None
        if upload["received"] != upload["size"]:
            raise ApiError(
                400, f"Finalized after {upload['received']} bytes; the upload declared {upload['size']} bytes."
            )
        del self._uploads[upload_id]
        file_id = upload["file_id"] or self._new_id()
        part = self.root / f"{upload_id}.part"
        digest = _sha256(part)
        part.replace(self.root / f"{file_id}.data")
        return self._register(
            file_id,
            display_name=upload["display_name"],
            mime_type=upload["mime_type"],
            size=upload["size"],
            sha256=digest,
            source="UPLOADED",
        )

    def received(self, upload_id: str) -> int:
        upload = self._uploads.get(upload_id)
        return upload["received"] if upload else 0

    # -- records ---------------------------------------------------------------------------

    def adopt(self, source: Path, *, display_name: str, mime_type: str = "application/jsonl") -> dict[str, Any]:
        """A finished work file (batch output) becomes a generated, downloadable file."""
        file_id = self._new_id()
        digest = _sha256(source)
        size = source.stat().st_size
        shutil.move(str(source), self.root / f"{file_id}.data")
        return self._register(
            file_id, display_name=display_name, mime_type=mime_type, size=size, sha256=digest, source="GENERATED"
        )

    def record(self, name: str) -> dict[str, Any]:
        file_id = name.removeprefix("files/")
        if not FILE_ID.match(file_id) or file_id not in self.records:
            raise not_found(f"files/{file_id}")
        return self.records[file_id]

    def data_path(self, name: str) -> Path:
        return self.root / f"{self.record(name)['id']}.data"

    def download_path(self, name: str) -> Path:
        record = self.record(name)
        if record["source"] != "GENERATED":
            raise ApiError(400, f"Only generated files can be downloaded; {record['name']} was uploaded.")
        return self.root / f"{record['id']}.data"

    def delete(self, name: str) -> None:
        record = self.record(name)
        with self.store.lock:
            self.records.pop(record["id"], None)
            (self.root / f"{record['id']}.json").unlink(missing_ok=True)
            (self.root / f"{record['id']}.data").unlink(missing_ok=True)

    def list_page(self, page_size: int, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        records = sorted(self.records.values(), key=lambda r: (r["created_at"], r["id"]), reverse=True)
        start = page_start(token)
        page = records[start : start + page_size]
        more = start + page_size < len(records)
        return page, (page_token(start + page_size) if more else None)

    def render(self, record: dict[str, Any], base_url: str) -> dict[str, Any]:
        out = {
            "name": record["name"],
            "mimeType": record["mime_type"],
            "sizeBytes": str(record["size"]),
            "createTime": timestamp(record["created_at"]),
            "updateTime": timestamp(record["created_at"]),
            "expirationTime": timestamp(record["created_at"] + RETENTION_SECONDS),
            "sha256Hash": record["sha256"],
            "uri": f"{base_url}/{API_VERSION}/{record['name']}",
            "state": "ACTIVE",
            "source": record["source"],
        }
        if record.get("display_name"):
            out["displayName"] = record["display_name"]
        if record["source"] == "GENERATED":
            out["downloadUri"] = f"{base_url}/download/{API_VERSION}/{record['name']}:download?alt=media"
        return out

    def _new_id(self) -> str:
        return self.store.new_id("", 12)[0]

    def _register(
        self, file_id: str, *, display_name: str | None, mime_type: str, size: int, sha256: str, source: str
    ) -> dict[str, Any]:
        record = {
            "id": file_id,
            "name": f"files/{file_id}",
            "display_name": display_name,
            "mime_type": mime_type,
            "size": size,
            "sha256": sha256,
            "source": source,
            "created_at": self.clock.now(),
        }
        with self.store.lock:
            self.records[file_id] = record
            write_json_atomic(self.root / f"{file_id}.json", record)
        return record


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(1 << 20):
            hasher.update(block)
    # Google's File.sha256Hash is bytes, so proto3 JSON writes it in base64.
    return base64.b64encode(hasher.hexdigest().encode()).decode()


def page_token(start: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{start}".encode()).decode()


def page_start(token: str | None) -> int:
    if not token:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "offset" and value.isdigit():
            return int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise ApiError(400, "Invalid page token.")
