"""``batch-pipelines audit``: a traffic log in, the money on the table (and where there is none) out."""

from __future__ import annotations

import csv
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import click
import orjson

from batch_pipelines.cli_params import Fraction, exact, money
from batch_pipelines.core.advice import DEFAULT_MIN_MONTHLY_SAVING, AdvicePolicy
from batch_pipelines.core.errors import BatchPipelinesError
from batch_pipelines.core.pricing import Discounts, PriceBook
from batch_pipelines.ledger import Ledger
from batch_pipelines.reports.charts import bars_png, spend_by_hour_png
from batch_pipelines.services.audit import AuditReport, audit_ledger, audit_log
from batch_pipelines.services.audit_html import audit_html
from batch_pipelines.services.log_checks import FIELDS
from batch_pipelines.services.traffic_log import FORMATS, parse_mapping

# Bad rows printed to the terminal; --out DIR keeps the first 1,000 in bad_rows.csv, --json lists them too.
_SHOWN_BAD_ROWS = 20
_PCT = Decimal("0.1")


def _format_for(path: Path, given: str | None) -> str:
    if given:
        return given
    suffix = path.suffix.lower().lstrip(".")
    return {"json": "jsonl", "ndjson": "jsonl", "jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}.get(
        suffix, "jsonl"
    )


@click.command("audit")
@click.argument("log", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--ledger", "ledger_url", default=None, help="Audit the ledger at this URL instead of a log file.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="Default: from the file's suffix.")
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="COLUMN=FIELD",
    help=f"Read the log's COLUMN as FIELD (one of {', '.join(FIELDS)}); repeatable.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write PNGs, HTML, JSON.")
@click.option(
    "--min-monthly-saving",
    type=Fraction(upper_exclusive=None),
    default=str(DEFAULT_MIN_MONTHLY_SAVING),
    show_default=True,
    help="USD a month below which a group is not worth moving.",
)
@click.option("--structural-discount", type=Fraction(), default="0", help="Negotiated discount in [0, 1).")
@click.option("--credit-bonus", type=Fraction(upper_exclusive=None), default="0", help="Prepaid credit bonus b.")
@click.option("--prices", type=click.Path(dir_okay=False), default=None, help="YAML price book over the default.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def audit_command(
    log: Path | None,
    ledger_url: str | None,
    fmt: str | None,
    maps: tuple[str, ...],
    out: Path | None,
    min_monthly_saving: Decimal,
    structural_discount: Decimal,
    credit_bonus: Decimal,
    prices: str | None,
    as_json: bool,
) -> None:
    """Where batch would save money in a log of calls, where it saves nothing, and why."""
    pairs: dict[str, str] = {}
    for item in maps:
        column, sep, target = item.partition("=")
        if not sep or not column or not target:
            raise click.UsageError(f"--map {item!r}: write it as column=field")
        pairs[column] = target
    try:
        mapping = parse_mapping(pairs)
        book = PriceBook.default(prices)
        policy = AdvicePolicy(
            min_monthly_saving=min_monthly_saving, discounts=Discounts(structural_discount, credit_bonus)
        )
        if (log is None) == (ledger_url is None):
            raise click.UsageError("give a LOG file or --ledger URL (one of them)")
        if log is not None:
            report = audit_log(log, _format_for(log, fmt), book, mapping=mapping, policy=policy)
            source = log.name
        else:
            with Ledger(ledger_url) as ledger:
                report = audit_ledger(ledger, book, policy=policy)
                source = f"the ledger {ledger.url_for_display}"
    except BatchPipelinesError as exc:
        raise click.UsageError(exc.message) from None
    if report.rows_read == 0:
        problems = ", ".join(f"{p}: {n:,}" for p, n in report.bad_by_problem.items()) or "the log has no rows"
        raise click.UsageError(f"no row of {source} could be audited ({problems})")
    if out is not None:
        write_outputs(report, source, out)
    if as_json:
        click.echo(orjson.dumps(audit_json(report)).decode())
    else:
        _print(report, source, out)


def write_outputs(report: AuditReport, source: str, out: Path) -> dict[str, Path]:
    """audit.json, the two PNGs, audit.html and bad_rows.csv under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    hour_png = spend_by_hour_png(report.spend_by_hour, f"Spend per hour of day over {report.days} day(s)")
    tag_png = bars_png(savings_by_tag(report), "Batch lane saving a month, by tag")
    paths = {
        "json": out / "audit.json",
        "spend_by_hour": out / "spend_by_hour.png",
        "savings_by_tag": out / "savings_by_tag.png",
        "html": out / "audit.html",
        "bad_rows": out / "bad_rows.csv",
    }
    paths["json"].write_bytes(orjson.dumps(audit_json(report), option=orjson.OPT_INDENT_2))
    paths["spend_by_hour"].write_bytes(hour_png)
    paths["savings_by_tag"].write_bytes(tag_png)
    paths["html"].write_text(audit_html(report, source, hour_png, tag_png), encoding="utf-8")
    with paths["bad_rows"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "problem"])
        writer.writerows((row.line, row.problem) for row in report.bad_listed)
    return paths


def savings_by_tag(report: AuditReport) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for group in report.groups:
        totals[group.tag] = totals.get(group.tag, Decimal(0)) + group.saving_per_month
    return totals


def _pct(share: Decimal) -> str:
    return f"{(share * 100).quantize(_PCT, rounding=ROUND_HALF_UP)}%"


def audit_json(report: AuditReport) -> dict[str, Any]:
    return {
        "rows_read": report.rows_read,
        "bad_rows": report.bad_rows,
        "bad_rows_by_problem": report.bad_by_problem,
        "bad_rows_listed": [{"line": row.line, "problem": row.problem} for row in report.bad_listed],
        "days": report.days,
        "first_call": report.first_call.isoformat() if report.first_call else None,
        "last_call": report.last_call.isoformat() if report.last_call else None,
        "spend_usd": exact(report.spend),
        "tokens": report.tokens,
        "movable_spend_usd": exact(report.movable_spend),
        "movable_tokens": report.movable_tokens,
        "movable_spend_share": str(report.movable_spend_share),
        "movable_token_share": str(report.movable_token_share),
        "saving_usd": exact(report.saving),
        "saving_per_day_usd": exact(report.saving_per_day),
        "saving_per_month_usd": exact(report.saving_per_month),
        "min_monthly_saving_usd": exact(report.min_monthly_saving),
        "groups": [
            {
                "tag": g.tag,
                "model": g.model,
                "calls": g.calls,
                "spend_usd": exact(g.spend),
                "movable_spend_usd": exact(g.movable_spend),
                "saving_usd": exact(g.saving),
                "saving_per_month_usd": exact(g.saving_per_month),
                "verdict": g.verdict.value,
                "case": g.case.value,
                "reason": g.reason,
            }
            for g in report.groups
        ],
        "spend_by_hour_usd": {band: [exact(v) for v in values] for band, values in report.spend_by_hour.items()},
    }


def _print(report: AuditReport, source: str, out: Path | None) -> None:
    span = ""
    if report.first_call and report.last_call:
        span = f" ({report.first_call:%Y-%m-%d %H:%M} to {report.last_call:%Y-%m-%d %H:%M} UTC)"
    click.echo(f"audit of {source}: {report.rows_read:,} calls over {report.days} day(s){span}")
    click.echo(
        f"spend {money(report.spend)}; background work paid at the sync price {money(report.movable_spend)} "
        f"({_pct(report.movable_spend_share)} of the spend, {_pct(report.movable_token_share)} of the tokens)"
    )
    click.echo(
        f"moving it to the batch lane saves {money(report.saving_per_day)} a day, "
        f"{money(report.saving_per_month)} a month"
    )
    click.echo("")
    header = f"{'tag':<18}{'model':<20}{'calls':>10}{'spend':>13}{'movable':>13}{'saving/mo':>12}  verdict"
    click.echo(header)
    for g in report.groups:
        click.echo(
            f"{g.tag[:17]:<18}{g.model[:19]:<20}{g.calls:>10,}{money(g.spend):>13}{money(g.movable_spend):>13}"
            f"{money(g.saving_per_month):>12}  {g.verdict.value}"
        )
    nothing = report.nothing_saved()
    if nothing:
        click.echo("")
        click.echo("where batch saves nothing:")
        for g in nothing:
            click.echo(f"  {g.tag} / {g.model}: {g.verdict.value}: {g.reason}")
    if report.bad_rows:
        click.echo("")
        counts = ", ".join(f"{problem}: {count:,}" for problem, count in report.bad_by_problem.items())
        click.echo(f"bad rows: {report.bad_rows:,} ({counts}), not audited")
        for row in report.bad_listed[:_SHOWN_BAD_ROWS]:
            click.echo(f"  line {row.line}: {row.problem}")
        if report.bad_rows > _SHOWN_BAD_ROWS:
            where = f"{out / 'bad_rows.csv'} has the first 1,000" if out else "--out DIR writes the first 1,000"
            click.echo(f"  ... {report.bad_rows - _SHOWN_BAD_ROWS:,} more ({where})")
    if out is not None:
        click.echo("")
        click.echo(f"wrote {out}/audit.html, spend_by_hour.png, savings_by_tag.png, audit.json, bad_rows.csv")
