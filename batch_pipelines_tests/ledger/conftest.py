"""Ledger fixtures: every test that takes ``ledger_url`` or ``ledger`` runs on SQLite and PostgreSQL.

PostgreSQL runs need BATCH_PIPELINES_TEST_POSTGRES_URL (CI sets it). Each test gets its own
schema there (through the connection's search_path), dropped afterwards, so test sessions
sharing one database never see each other's rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from batch_pipelines.ledger import Ledger
from batch_pipelines.ledger.engine import sqlite_url

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A settable clock: tests move time instead of sleeping."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


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
