"""Where the ledger lives, how it is named in messages, and which databases it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from batch_pipelines.core.errors import LedgerError
from batch_pipelines.ledger import Ledger, default_ledger_path, mask_url
from batch_pipelines.ledger.engine import parse_ledger_url

from .helpers import JOB, PARTITION, PROVIDER, requests


def test_default_path_honours_dagster_home(tmp_path, monkeypatch):
    """With no URL the ledger is a SQLite file under $DAGSTER_HOME/batch_pipelines/."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    with Ledger() as ledger:
        ledger.record_items(JOB, PARTITION, requests(1), provider=PROVIDER)
        expected = tmp_path / "dagster" / "batch_pipelines_data" / "ledger.sqlite"
        assert expected.is_file()
        assert ledger.url_for_display == f"sqlite:///{expected}"


def test_default_path_without_dagster_home_is_in_the_home_directory():
    """Without DAGSTER_HOME the default file is ~/.batch_pipelines/ledger.sqlite."""
    assert default_ledger_path({}) == Path.home() / ".batch_pipelines" / "ledger.sqlite"
    assert default_ledger_path({"DAGSTER_HOME": "/srv/dagster"}) == Path(
        "/srv/dagster/batch_pipelines_data/ledger.sqlite"
    )


def test_for_path_creates_missing_directories(tmp_path):
    """Ledger.for_path makes the file's directory and an in-memory URL works too."""
    with Ledger.for_path(tmp_path / "a" / "b" / "ledger.sqlite") as ledger:
        assert ledger.record_items(JOB, PARTITION, requests(2), provider=PROVIDER) == 2
    assert (tmp_path / "a" / "b" / "ledger.sqlite").is_file()
    with Ledger("sqlite://") as memory:
        assert memory.record_items(JOB, PARTITION, requests(2), provider=PROVIDER) == 2
        assert memory.item_counts(JOB, PARTITION) == {"pending": 2}


def test_mask_url_hides_passwords_and_secret_query_values():
    """Displayed URLs never carry the password or secret-looking query values, even when unparseable."""
    assert mask_url("postgresql+psycopg://app:s3cret@db:5432/ledger") == "postgresql+psycopg://app:***@db:5432/ledger"
    assert "tok" not in mask_url("postgresql+psycopg://app@db/ledger?sslpassword=tok&application_name=x")
    assert "s3cret" not in mask_url("::not a url//user:s3cret@host")


@pytest.mark.postgres
def test_password_is_masked_on_a_live_postgres_ledger(postgres_schema_url):
    """A ledger opened with a password shows it masked in url_for_display and repr."""
    url = make_url(postgres_schema_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    with Ledger(url) as ledger:  # the test server trusts local connections, so any password works
        assert ledger.record_items(JOB, PARTITION, requests(1), provider=PROVIDER) == 1
        assert "s3cret-pw" not in ledger.url_for_display and "s3cret-pw" not in repr(ledger)
        assert ":***@" in ledger.url_for_display


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a database URL"),
        ("mysql://app:s3cret@db/ledger", "supports SQLite and PostgreSQL"),
        ("postgresql+psycopg://app:s3cret@127.0.0.1:1/ledger", "is unavailable"),
        ("postgresql+pg8000://app:s3cret@127.0.0.1/ledger", "cannot open ledger"),
    ],
)
def test_bad_urls_get_clear_errors_without_the_password(url, message):
    """Unparseable, unsupported, driverless and unreachable URLs raise LedgerError naming the problem, password
    masked."""
    with pytest.raises(LedgerError, match=message) as raised:
        Ledger(url)
    assert "s3cret" not in str(raised.value) and "s3cret" not in repr(raised.value.details)


def test_postgres_urls_get_the_installed_driver():
    """postgres:// and postgresql:// URLs use psycopg 3, the driver that is installed."""
    assert parse_ledger_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert parse_ledger_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert parse_ledger_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
