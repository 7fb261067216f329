"""OpenAI Files: upload, retrieve, list, delete, and where the bytes are for download."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, BinaryIO

from batch_pipelines.emulator.clock import VirtualClock
from batch_pipelines.emulator.errors import ApiError
from batch_pipelines.emulator.state import FILE_ID, Store

MAX_UPLOAD_BYTES = 200 * 1024 * 1024  # the batch input cap; the emulator stores nothing larger
PURPOSES = (
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
)
_CHUNK = 1 << 20


def not_found(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", param="id", code=None)


class OpenAIFiles:
    def __init__(self, store: Store, clock: VirtualClock) -> None:
        self.store = store
        self.clock = clock

    def record(self, file_id: str) -> dict[str, Any]:
        if not FILE_ID.match(file_id) or file_id not in self.store.files:
            raise not_found(file_id)
        return self.store.files[file_id]

    def upload(self, source: BinaryIO, *, filename: str, purpose: str) -> dict[str, Any]:
        if purpose not in PURPOSES:
            raise ApiError(
                400, f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'", param="purpose", code="invalid_value"
            )
        file_id, _ = self.store.new_id("file-")
        target = self.store.file_data_path(file_id)
        size = 0
        with open(target, "wb") as out:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    out.close()
                    target.unlink(missing_ok=True)
                    raise ApiError(
                        413,
                        f"File is larger than the {MAX_UPLOAD_BYTES // (1024 * 1024)} MB limit.",
                        param="file",
                        code="file_too_large",
                    )
                out.write(chunk)
        return self.register(file_id, filename=filename, purpose=purpose, size=size)

    def register(self, file_id: str, *, filename: str, purpose: str, size: int) -> dict[str, Any]:
        record = {
            "id": file_id,
            "object": "file",
            "bytes": size,
            "created_at": int(self.clock.now()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        with self.store.lock:
            self.store.save_file(record)
        return record

    def adopt(self, source: Path, *, filename: str, purpose: str) -> dict[str, Any]:
        """Turn a finished work file (batch output) into a file object, without copying it."""
        file_id, _ = self.store.new_id("file-")
        size = source.stat().st_size
        shutil.move(str(source), self.store.file_data_path(file_id))
        return self.register(file_id, filename=filename, purpose=purpose, size=size)

    def delete(self, file_id: str) -> dict[str, Any]:
        self.record(file_id)
        with self.store.lock:
            self.store.delete_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    def list(self, *, purpose: str | None, after: str | None, limit: int, order: str) -> dict[str, Any]:
        records = [r for r in self.store.files.values() if purpose is None or r["purpose"] == purpose]
        records.sort(key=lambda r: (r["created_at"], r["id"]), reverse=order != "asc")
        if after:
            ids = [r["id"] for r in records]
            records = records[ids.index(after) + 1 :] if after in ids else []
        page = records[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(records) > limit,
        }

    def data_path(self, file_id: str) -> Path:
        self.record(file_id)
        return self.store.file_data_path(file_id)
