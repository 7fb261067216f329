"""Where the ledger lives and how we connect to it.

A SQLite file by default (under ``$DAGSTER_HOME`` when Dagster is configured, else the user's
home), PostgreSQL by URL for deployments with several workers. URLs are only ever shown with
their password masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from batch_pipelines.core.errors import LedgerError

# Not "batch_pipelines": a folder of that name in a run's working directory would shadow the package.
DATA_DIRNAME = "batch_pipelines_data"
LEDGER_FILENAME = "ledger.sqlite"
SUPPORTED = "sqlite:///path/to/ledger.sqlite or postgresql+psycopg://user@host:5432/db"

# The connection execution option that asks for a write transaction (BEGIN IMMEDIATE on SQLite).
WRITE_OPTION = "batch_pipelines_write"

# SQLite waits this long for another writer before failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000

_SECRET_QUERY_KEYS = re.compile(r"pass|secret|token|key", re.IGNORECASE)
_USERINFO = re.compile(r"(//[^/:@]*:)[^@/]*@")


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$DAGSTER_HOME/batch_pipelines_data``, else ``~/.batch_pipelines``: the ledger, results and scratch."""
    env = os.environ if environ is None else environ
    dagster_home = env.get("DAGSTER_HOME")
    if dagster_home:
        return Path(dagster_home).expanduser() / DATA_DIRNAME
    return Path.home() / ".batch_pipelines"


def default_ledger_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$DAGSTER_HOME/batch_pipelines_data/ledger.sqlite``, else ``~/.batch_pipelines/ledger.sqlite``."""
    return default_data_dir(environ) / LEDGER_FILENAME


def sqlite_url(path: str | os.PathLike[str]) -> str:
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def mask_url(url: str | URL) -> str:
    """The URL as it may be shown: password and secret-looking query values replaced by ***."""
    if isinstance(url, str):
        text = url
        try:
            url = make_url(text)
        except ArgumentError:
            return _USERINFO.sub(r"\1***@", text)
    masked_query = {k: ("***" if _SECRET_QUERY_KEYS.search(k) else v) for k, v in url.query.items()}
    return url.set(query=masked_query).render_as_string(hide_password=True)


def parse_ledger_url(url: str | URL) -> URL:
    """A SQLAlchemy URL for a supported backend; PostgreSQL URLs get the psycopg 3 driver."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        raise LedgerError(
            f"ledger URL {mask_url(str(url))!r} is not a database URL; expected {SUPPORTED}",
            url=mask_url(str(url)),
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "postgresql" and "+" not in parsed.drivername:
        # psycopg 3 is the installed driver; SQLAlchemy 2.0 would default to psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend not in ("sqlite", "postgresql"):
        raise LedgerError(
            f"ledger URL {mask_url(parsed)!r} uses {backend!r}; the ledger supports SQLite and PostgreSQL "
            f"({SUPPORTED})",
            url=mask_url(parsed),
        )
    return parsed


def create_ledger_engine(url: str | URL) -> Engine:
    parsed = parse_ledger_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed)
        return create_engine(parsed, pool_pre_ping=True, connect_args={"application_name": "batch_pipelines"})
    except (NoSuchModuleError, ModuleNotFoundError, ArgumentError) as exc:
        raise LedgerError(
            f"cannot open ledger {mask_url(parsed)!r}: {type(exc).__name__}; expected {SUPPORTED}",
            url=mask_url(parsed),
        ) from None


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if in_memory:
        # Every new connection to :memory: is a new, empty database: share one connection.
        kwargs["poolclass"] = StaticPool
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below): pysqlite's own implicit transactions defer the
        # write lock to the first write, which lets two writers deadlock on the upgrade.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL loses at most the last commits on power loss, never consistency.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache per connection
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
