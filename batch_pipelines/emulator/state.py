"""Durable emulator state under one directory: files, batches, counters and the clock.

Layout (every name is an id validated against a strict pattern before it touches a path, so
nothing a client sends can escape the directory):

    emulator.json                    counters, id nonce, clock snapshot
    files/<file-id>.json, .data      OpenAI file objects and their bytes
    batches/<batch_id>.json          OpenAI batch records; batches/<batch_id>/ holds work files
    anthropic/<msgbatch_id>.json     Anthropic batch records; anthropic/<id>/ holds requests and results
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import orjson

FILE_ID = re.compile(r"^file-[A-Za-z0-9]{1,64}$")
BATCH_ID = re.compile(r"^batch_[A-Za-z0-9]{1,64}$")
MESSAGE_BATCH_ID = re.compile(r"^msgbatch_[A-Za-z0-9]{1,64}$")


def checked_id(pattern: re.Pattern[str], value: str) -> str:
    """``value`` if it matches ``pattern``; routes answer 404 before this can ever raise."""
    if not pattern.match(value):
        raise ValueError(f"not a valid id: {value!r}")
    return value


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(value))
    os.replace(tmp, path)


class Store:
    """In-memory indexes of everything on disk; every mutation is written through."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.lock = threading.RLock()
        for sub in ("files", "batches", "anthropic"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        meta_path = self.root / "emulator.json"
        self.is_new = not meta_path.exists()
        self.meta: dict[str, Any] = (
            orjson.loads(meta_path.read_bytes())
            if not self.is_new
            else {"nonce": secrets.token_hex(8), "next_id": 0, "batches_created": {"openai": 0, "anthropic": 0}}
        )
        self.files = self._load_dir("files", FILE_ID)
        self.batches = self._load_dir("batches", BATCH_ID)
        self.anthropic_batches = self._load_dir("anthropic", MESSAGE_BATCH_ID)

    def _load_dir(self, sub: str, pattern: re.Pattern[str]) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        for path in (self.root / sub).glob("*.json"):
            if pattern.match(path.stem):
                records[path.stem] = orjson.loads(path.read_bytes())
        return records

    # -- ids -----------------------------------------------------------------------------

    def new_id(self, prefix: str, length: int = 24) -> tuple[str, int]:
        """A fresh id and its sequence number (the sequence seeds per-object randomness)."""
        with self.lock:
            seq = self.meta["next_id"]
            self.meta["next_id"] = seq + 1
            self.save_meta()
        digest = hashlib.blake2b(f"{self.meta['nonce']}:{seq}".encode(), digest_size=32).hexdigest()
        return f"{prefix}{digest[:length]}", seq

    def count_created(self, provider: str) -> None:
        with self.lock:
            self.meta["batches_created"][provider] = self.meta["batches_created"].get(provider, 0) + 1
            self.save_meta()

    # -- paths (only ever built from validated ids) -----------------------------------------

    def file_data_path(self, file_id: str) -> Path:
        return self.root / "files" / f"{checked_id(FILE_ID, file_id)}.data"

    def batch_dir(self, batch_id: str) -> Path:
        path = self.root / "batches" / checked_id(BATCH_ID, batch_id)
        path.mkdir(exist_ok=True)
        return path

    def anthropic_dir(self, batch_id: str) -> Path:
        path = self.root / "anthropic" / checked_id(MESSAGE_BATCH_ID, batch_id)
        path.mkdir(exist_ok=True)
        return path

    # -- writes ---------------------------------------------------------------------------

    def save_meta(self) -> None:
        write_json_atomic(self.root / "emulator.json", self.meta)

    def save_clock(self, virtual_now: float) -> None:
        with self.lock:
            self.meta["clock"] = {"virtual": virtual_now, "wall": time.time()}
            self.save_meta()

    def save_file(self, record: dict[str, Any]) -> None:
        self.files[record["id"]] = record
        write_json_atomic(self.root / "files" / f"{record['id']}.json", record)

    def delete_file(self, file_id: str) -> None:
        self.files.pop(file_id, None)
        (self.root / "files" / f"{file_id}.json").unlink(missing_ok=True)
        self.file_data_path(file_id).unlink(missing_ok=True)

    def save_batch(self, record: dict[str, Any]) -> None:
        self.batches[record["id"]] = record
        write_json_atomic(self.root / "batches" / f"{record['id']}.json", record)

    def save_anthropic_batch(self, record: dict[str, Any]) -> None:
        self.anthropic_batches[record["id"]] = record
        write_json_atomic(self.root / "anthropic" / f"{record['id']}.json", record)

    def delete_anthropic_batch(self, batch_id: str) -> None:
        self.anthropic_batches.pop(batch_id, None)
        (self.root / "anthropic" / f"{batch_id}.json").unlink(missing_ok=True)
        work = self.root / "anthropic" / batch_id
        if work.is_dir():
            for path in work.iterdir():
                path.unlink()
            work.rmdir()
