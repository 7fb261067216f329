"""Ledger fixtures: every test that takes ``ledger_url`` or ``ledger`` runs on SQLite and PostgreSQL.

PostgreSQL runs need BATCH_PIPELINES_TEST_POSTGRES_URL (CI sets it). Each test gets its own
schema there (through the connection's search_path), dropped afterwards, so test sessions
sharing one database never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from batch_pipelines.ledger import Ledger
from batch_pipelines.ledger.engine import sqlite_url

POSTGRES_ENV = "BATCH_PIPELINES_TEST_POSTGRES_URL"
START = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


class FakeClock:
    """A settable clock: tests move time instead of sleeping."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def postgres_base_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(
            f"{POSTGRES_ENV} is not set: export it (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) "
            "to run the PostgreSQL ledger tests"
        )
    return url


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose connections live in a fresh schema of their own."""
    base = make_url(postgres_base_url())
    if base.drivername in ("postgresql", "postgres"):
        base = base.set(drivername="postgresql+psycopg")
    schema = f"bp_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "ledger.sqlite")
    return request.getfixturevalue("postgres_schema_url")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(ledger_url: str, clock: FakeClock) -> Iterator[Ledger]:
    # A small chunk size so that every bulk operation crosses chunk boundaries.
    with Ledger(ledger_url, chunk_size=7, clock=clock) as opened:
        yield opened
