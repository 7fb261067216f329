"""The enqueue fast path on SQLite: a deferrable call committed with one prepared INSERT.

Why it opens its own ``sqlite3`` connections instead of going through ``Database``: enqueue is
the router's hot path and each call must be durable before ``Router.call`` returns, so every
call is its own transaction. Through SQLAlchemy Core the per-call overhead (checkout, compile,
events) was ten times the insert itself; ``bench/router.py`` measures this path (its
``TARGET`` lines). PostgreSQL, ``:memory:`` databases and every read still go through
``Database``; this module writes exactly the bytes SQLAlchemy would, so readers are unchanged.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any

from batch_pipelines.core.errors import LedgerError
from batch_pipelines.ledger.deferred_schema import deferred_calls
from batch_pipelines.ledger.engine import SQLITE_BUSY_TIMEOUT_MS

_ENQUEUE_COLUMNS = (
    "call_id",
    "idempotency_key",
    "provider",
    "model",
    "endpoint",
    "body",
    "deadline",
    "state",
    "flush_id",
    "warning",
    "created_at",
    "updated_at",
)


class SqliteEnqueue:
    """The enqueue on SQLite without SQLAlchemy in the way: one prepared INSERT and a commit per call.

    A call must be durable before ``Router.call`` returns, so every call is its own transaction;
    through SQLAlchemy Core the per-call overhead (checkout, compile, events) was ten times the
    insert itself. One connection per thread, with the ledger's own settings (WAL, NORMAL sync,
    busy timeout); times are stored exactly as SQLAlchemy stores them, so every other reader is
    unchanged.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        placeholders = ", ".join("?" for _ in _ENQUEUE_COLUMNS)
        self._sql = (
            f"INSERT INTO {deferred_calls.name} ({', '.join(_ENQUEUE_COLUMNS)}) VALUES ({placeholders}) "
            "ON CONFLICT DO NOTHING"
        )

    def insert(self, values: dict[str, Any]) -> bool:
        """Insert and commit; False when the idempotency key (or id) was already there."""
        deadline = values["deadline"]
        created = _sqlite_time(values["created_at"])
        params = (
            values["call_id"],
            values["idempotency_key"],
            values["provider"],
            values["model"],
            values["endpoint"],
            values["body"],
            None if deadline is None else _sqlite_time(deadline),
            values["state"],
            values["flush_id"],
            values["warning"],
            created,
            created if values["updated_at"] is values["created_at"] else _sqlite_time(values["updated_at"]),
        )
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                inserted = connection.execute(self._sql, params).rowcount
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger refused a deferred call: {exc}") from exc
        return inserted > 0

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.database, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()


def _sqlite_time(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text for the naive UTC value ``UTCDateTime`` binds."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
