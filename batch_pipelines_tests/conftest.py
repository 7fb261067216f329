"""Fixtures shared by every test package.

PostgreSQL: tests that need it take ``postgres_schema_url``. They read the server's URL from
BATCH_PIPELINES_TEST_POSTGRES_URL (CI's ``.ci/run`` exports it after making sure the server
is up). Without it they are skipped locally, saying so; with BATCH_PIPELINES_REQUIRE_POSTGRES=1
(CI) a missing URL fails them instead, so CI never counts a skipped database test as passing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from batch_pipelines.emulator.testing import RunningEmulator, run_emulator

POSTGRES_ENV = "BATCH_PIPELINES_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "BATCH_PIPELINES_REQUIRE_POSTGRES"


@pytest.fixture
def emulator(tmp_path) -> Iterator[RunningEmulator]:
    """A fresh local provider on loopback: frozen virtual clock, default profile, own state dir."""
    with run_emulator(state_dir=tmp_path / "emulator-state") as running:
        yield running


def postgres_base_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        message = (
            f"{POSTGRES_ENV} is not set: export it (e.g. "
            "postgresql+psycopg://postgres@127.0.0.1:5432/test) to run the PostgreSQL tests"
        )
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose connections live in a fresh schema of their own, dropped afterwards."""
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
