"""The nightly invoice, from a ledger filled by real runs against the emulator: exact totals, promotions, retries."""

from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from click.testing import CliRunner

from batch_pipelines.cli import main
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Lane
from batch_pipelines.emulator.testing import run_emulator
from batch_pipelines.reports.charts import PNG_SIGNATURE
from batch_pipelines.services.invoice import Invoice, build_invoice, day_window
from batch_pipelines.services.invoice_views import invoice_markdown
from batch_pipelines_tests.reliability.pipeline import (
    VirtualTime,
    build_gateway,
    drive,
    make_requests,
    start,
    submit,
    tick,
)

BASE = {"seed": 3, "batch_completion_seconds": {"min": 60, "max": 600}}
BOOK = PriceBook.default()


@pytest.fixture
def filled(tmp_path):
    """Two partitions in one ledger: one with 500s retried on the sync lane, one promoted by the watchdog."""
    with run_emulator(profile=BASE, state_dir=tmp_path / "emu") as emu:
        vtime = VirtualTime(emu)
        first_day = vtime.datetime().date()
        gateway = build_gateway(emu, tmp_path, vtime)
        emu.set_profile({**BASE, "item_error_rate": 0.25, "item_error_kinds": {"server_error_500": 1}})
        retried = start(emu, gateway, vtime, make_requests(40, prefix="r"), job="classification")
        submit(retried)
        drive(retried)
        emu.set_profile({**BASE, "batch_completion_seconds": 1200, "cancel_seconds": 600})
        deadline = vtime.datetime() + timedelta(minutes=30)
        promoted = start(emu, gateway, vtime, make_requests(30, deadline=deadline, prefix="p"), job="reports")
        submit(promoted)
        vtime.advance(300)  # the batch answers some lines before the watchdog looks
        for _ in range(100):  # the completion sensor, then the deadline sensor, as in Dagster
            if tick(promoted):
                break
            for action in gateway.watch_deadlines(promoted.job):
                if action.run_on_sync_now:
                    gateway.promote(promoted.job, promoted.partition, rebuild_requests=promoted.rebuild)
            vtime.advance(300)
        assert promoted.last.complete
        last_day = vtime.datetime().date()
        yield gateway, (retried, promoted), first_day, last_day
        gateway.close()


def invoices(gateway, first_day, last_day) -> list[Invoice]:
    days = [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]
    return [build_invoice(gateway.ledger, BOOK, day) for day in days]


def test_invoice_totals_are_the_ledger_totals_to_the_last_digit(filled):
    """Over the days the runs took, the invoice's cost and all-sync cost equal the ledger's partition totals."""
    gateway, scenarios, first_day, last_day = filled
    found = invoices(gateway, first_day, last_day)
    totals = [gateway.ledger.partition_totals(s.job, s.partition) for s in scenarios]
    assert sum((i.cost_usd for i in found), Decimal(0)) == sum((t.cost_usd for t in totals), Decimal(0))
    assert sum((i.sync_equivalent_usd for i in found), Decimal(0)) == sum(
        (t.sync_equivalent_usd for t in totals), Decimal(0)
    )
    lanes = {line.lane for i in found for line in i.lines}
    assert lanes == {Lane.BATCH, Lane.SYNC}
    assert {line.workload for i in found for line in i.lines} == {"classification", "reports"}
    saving = sum((i.savings_usd for i in found), Decimal(0))
    assert 0 < saving < sum((i.sync_equivalent_usd for i in found), Decimal(0)) / 2


def test_invoice_shows_the_extra_paid_for_promotions_and_retries(filled):
    """Promotion extra equals what the results run reported; the 500s retried on sync show a retry extra."""
    gateway, (retried, promoted), first_day, last_day = filled
    found = invoices(gateway, first_day, last_day)
    assert promoted.last.promoted > 0 and promoted.last.paid_twice_usd > 0  # the scenario did promote
    assert sum((i.promotion_extra_usd for i in found), Decimal(0)) == promoted.last.promotion_extra_cost_usd
    assert sum((i.paid_twice_usd for i in found), Decimal(0)) == promoted.last.paid_twice_usd
    assert sum(i.promoted_attempts for i in found) == promoted.last.promoted
    assert sum(i.retry_attempts for i in found) > 0
    assert sum((i.retry_extra_usd for i in found), Decimal(0)) > 0


def test_a_day_with_nothing_recorded_is_an_empty_invoice(filled):
    """The day before the runs: no lines, zero cost, zero saving, no division by zero."""
    gateway, _, first_day, _ = filled
    empty = build_invoice(gateway.ledger, BOOK, first_day - timedelta(days=1))
    assert empty.lines == () and empty.cost_usd == 0 and empty.savings_pct == 0


def test_invoice_command_json_text_png_and_markdown(filled, tmp_path):
    """The command prints the same totals as JSON and text, writes a valid PNG; the markdown has a total row."""
    gateway, _, first_day, last_day = filled
    url = str(gateway.ledger.engine.url)
    day = max(invoices(gateway, first_day, last_day), key=lambda i: i.cost_usd)
    runner = CliRunner()
    result = runner.invoke(
        main, ["invoice", "--date", day.day.isoformat(), "--ledger", url, "--json", "--png", str(tmp_path / "i.png")]
    )
    assert result.exit_code == 0, result.output
    payload = orjson.loads(result.output)
    assert Decimal(payload["cost_usd"]) == day.cost_usd
    assert Decimal(payload["sync_equivalent_usd"]) == day.sync_equivalent_usd
    assert (tmp_path / "i.png").read_bytes()[:8] == PNG_SIGNATURE
    text = runner.invoke(main, ["invoice", "--date", day.day.isoformat(), "--ledger", url])
    assert "all on the sync lane" in text.output and "extra paid: promotions" in text.output
    assert "| **total** |" in invoice_markdown(day)
    bad = runner.invoke(main, ["invoice", "--date", "26/11/2026", "--ledger", url])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output


def test_day_window_is_midnight_to_midnight_utc():
    """A day is [00:00, 24:00) UTC."""
    from datetime import date

    start, end = day_window(date(2026, 11, 26))
    assert start.isoformat() == "2026-11-26T00:00:00+00:00" and end - start == timedelta(days=1)


def test_the_audit_reads_the_same_ledger_as_its_traffic(filled):
    """audit --ledger: every closed attempt is a call, its spend the ledger's cost, tagged by workload."""
    from batch_pipelines.services.audit import audit_ledger

    gateway, scenarios, _, _ = filled
    report = audit_ledger(gateway.ledger, BOOK)
    totals = [gateway.ledger.partition_totals(s.job, s.partition) for s in scenarios]
    assert report.bad_rows == 0
    assert report.rows_read == sum(t.attempts for t in totals)
    assert report.spend == sum((t.cost_usd for t in totals), Decimal(0))
    assert {g.tag for g in report.groups} == {"classification", "reports"}
