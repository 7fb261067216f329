"""Schema revisions: a new ledger is at the head, an old one upgrades in place with its data, a newer one is refused."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text, update

from batch_pipelines.core.errors import LedgerError
from batch_pipelines.core.item_status import ItemStatus
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.core.usage import Usage
from batch_pipelines.ledger import Ledger
from batch_pipelines.ledger.deferred_schema import DEFERRED_TABLES, deferred_calls
from batch_pipelines.ledger.engine import parse_ledger_url
from batch_pipelines.ledger.migrations import BASELINE_REVISION, VERSION_TABLE, head_revision, script_directory
from batch_pipelines.ledger.schema import ledger_meta, metadata

from .helpers import JOB, PARTITION, PROVIDER, requests

FIXTURES = Path(__file__).parent / "fixtures"
# What the fixture's partition holds (see the header of fixtures/legacy_v1_*.sql).
LEGACY_JOB, LEGACY_PARTITION = "classification", "2026-11-19"
LEGACY_COST = Decimal("0.000123456789")


def load_legacy_ledger(url: str) -> None:
    """Create, with plain SQL, the ledger that the release before Alembic made (schema_version 1)."""
    engine = create_engine(parse_ledger_url(url))
    lines = (FIXTURES / f"legacy_v1_{engine.dialect.name}.sql").read_text().splitlines()
    script = "\n".join(line for line in lines if not line.startswith("--"))
    with engine.begin() as connection:
        for statement in script.split(";\n"):
            if statement.strip():
                connection.exec_driver_sql(statement)
    engine.dispose()


def stamp_of(url: str) -> str | None:
    engine = create_engine(parse_ledger_url(url))
    with engine.connect() as connection:
        value = connection.scalar(select(ledger_meta.c.value).where(ledger_meta.c.key == "schema_version"))
    engine.dispose()
    return value


def test_a_new_ledger_is_at_the_head_revision_and_reopens_with_its_data(ledger_url):
    """A new database gets every revision; reopening it changes nothing and keeps the data."""
    with Ledger(ledger_url) as first:
        assert first.schema_revision() == head_revision() == Ledger.head_revision()
        first.record_items(JOB, PARTITION, requests(3), provider=PROVIDER)
    with Ledger(ledger_url) as again:
        assert again.schema_revision() == head_revision()
        counts = again.item_counts(JOB, PARTITION)
        assert counts == {ItemStatus.PENDING: 3}
        assert [type(status) for status in counts] == [ItemStatus]


def test_the_revisions_build_exactly_the_tables_in_schema_py(ledger_url):
    """Running every revision leaves the tables, columns and indexes schema.py declares, nothing else."""
    with Ledger(ledger_url) as ledger, ledger.engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}), metadata
        )
        tables = set(inspect(connection).get_table_names())
    assert differences == []
    assert tables == {table.name for table in metadata.sorted_tables} | {VERSION_TABLE}


def test_the_revisions_form_one_line_from_the_baseline():
    """Revisions form a single chain from the baseline to one head (no branch left to merge)."""
    script = script_directory()
    assert script.get_heads() == [head_revision()]
    chain = [revision.revision for revision in script.walk_revisions()]
    assert chain[-1] == BASELINE_REVISION
    assert len(chain) == len(set(chain))


def test_a_ledger_from_before_alembic_upgrades_in_place_with_its_data_intact(ledger_url, clock):
    """A schema_version 1 ledger is stamped, upgraded to the head, and keeps every item, attempt, intent and batch."""
    load_legacy_ledger(ledger_url)
    assert stamp_of(ledger_url) == "1"

    with Ledger(ledger_url, clock=clock) as ledger:
        assert ledger.schema_revision() == head_revision()
        counts = ledger.item_counts(LEGACY_JOB, LEGACY_PARTITION)
        assert counts == {
            ItemStatus.SUCCEEDED: 3,
            ItemStatus.INVALID_OUTPUT: 1,
            ItemStatus.FAILED: 1,
            ItemStatus.PENDING: 1,
        }
        invalid = ledger.get_item(LEGACY_JOB, LEGACY_PARTITION, "ticket-003")
        assert invalid is not None
        assert invalid.status is ItemStatus.INVALID_OUTPUT
        assert invalid.reason == "InvalidOutput: unexpected label 'maybe'"
        assert invalid.cost_usd == LEGACY_COST
        assert invalid.deadline == datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
        assert invalid.estimated_input_tokens == 1703
        totals = ledger.partition_totals(LEGACY_JOB, LEGACY_PARTITION)
        assert (totals.attempts, totals.open_attempts) == (5, 0)
        assert totals.cost_usd == 4 * LEGACY_COST
        assert totals.usage == Usage(input_tokens=4 * 1700, cached_input_tokens=4 * 1536, output_tokens=4 * 3)
        [intent] = ledger.intents(LEGACY_JOB, LEGACY_PARTITION)
        assert (intent.status, intent.file_id, intent.vendor_batch_id) == ("submitted", "file-in-1", "batch_1")
        [batch] = ledger.batches(LEGACY_JOB, LEGACY_PARTITION)
        assert (batch.status, batch.reconciled, batch.metadata) == (
            BatchStatus.COMPLETED,
            True,
            {"intent_key": intent.intent_key},
        )

        # The upgraded ledger keeps working: the failed item is retried and succeeds.
        assert ledger.mark_for_retry(LEGACY_JOB, LEGACY_PARTITION, ["ticket-004"], lane=Lane.SYNC) == 1
        assert ledger.assign_items(LEGACY_JOB, LEGACY_PARTITION, ["ticket-004"], batch_key="sync-1", lane=Lane.SYNC)
        outcome = ItemOutcome("ticket-004", OutcomeKind.SUCCEEDED, usage=Usage(input_tokens=10, output_tokens=2))
        costs = {"ticket-004": (Decimal("0.000001"), Decimal("0.000001"))}
        assert ledger.record_outcomes(LEGACY_JOB, LEGACY_PARTITION, "sync-1", [outcome], costs, lane=Lane.SYNC) == 1
        assert ledger.partition_totals(LEGACY_JOB, LEGACY_PARTITION).cost_usd == 4 * LEGACY_COST + Decimal("0.000001")

    # The old stamp is now a fence: a release from before Alembic finds version 2 and refuses.
    assert stamp_of(ledger_url) == "2"
    with Ledger(ledger_url) as reopened:
        assert reopened.item_counts(LEGACY_JOB, LEGACY_PARTITION)[ItemStatus.SUCCEEDED] == 4


def test_buffer_tables_a_ledger_made_for_itself_before_alembic_are_kept(ledger_url):
    """A pre-Alembic ledger whose router buffer created its own tables keeps them and their calls."""
    load_legacy_ledger(ledger_url)
    engine = create_engine(parse_ledger_url(ledger_url))
    queued = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    with engine.begin() as connection:
        metadata.create_all(connection, tables=list(DEFERRED_TABLES))
        connection.execute(
            deferred_calls.insert().values(
                call_id="dfr_1",
                provider="openai",
                model="gpt-5.4-mini",
                endpoint="/v1/chat/completions",
                body="{}",
                state="queued",
                created_at=queued,
                updated_at=queued,
            )
        )
    engine.dispose()
    with Ledger(ledger_url) as ledger, ledger.engine.connect() as connection:
        assert ledger.schema_revision() == head_revision()
        assert connection.execute(select(deferred_calls.c.call_id, deferred_calls.c.state)).all() == [
            ("dfr_1", "queued")
        ]


def test_a_ledger_upgraded_by_a_newer_release_is_refused_untouched(ledger_url):
    """A revision this release does not know is refused with both revisions named, and nothing is changed."""
    with Ledger(ledger_url) as ledger:
        ledger.record_items(JOB, PARTITION, requests(2), provider=PROVIDER)
        with ledger.engine.begin() as connection:
            connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(LedgerError, match="revision '9999'.*newest is") as raised:
        Ledger(ledger_url)
    assert raised.value.details == {"found_revision": "9999", "code_revision": head_revision()}
    engine = create_engine(parse_ledger_url(ledger_url))
    with engine.connect() as connection:
        assert connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}")) == "9999"
    engine.dispose()


def test_an_unexpected_old_stamp_is_refused(ledger_url):
    """A ledger with an old-style stamp other than 1 and no revision is not guessed at."""
    load_legacy_ledger(ledger_url)
    engine = create_engine(parse_ledger_url(ledger_url))
    with engine.begin() as connection:
        connection.execute(update(ledger_meta).values(value="7"))
    engine.dispose()
    with pytest.raises(LedgerError, match="schema version 7 but no Alembic revision"):
        Ledger(ledger_url)


def test_two_processes_opening_an_old_ledger_at_once_upgrade_it_once(ledger_url, clock):
    """Concurrent opens serialise on the upgrade: both succeed and the ledger is at the head once."""
    load_legacy_ledger(ledger_url)
    errors: list[BaseException] = []
    revisions: list[str | None] = []

    def open_it() -> None:
        try:
            with Ledger(ledger_url, clock=clock) as ledger:
                revisions.append(ledger.schema_revision())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timedelta(minutes=1).total_seconds())
    assert errors == []
    assert revisions == [head_revision()] * 4
    engine = create_engine(parse_ledger_url(ledger_url))
    with engine.connect() as connection:
        assert connection.scalar(text(f"SELECT count(*) FROM {VERSION_TABLE}")) == 1
    engine.dispose()
