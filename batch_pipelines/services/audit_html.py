"""The audit as one self-contained HTML page: the figures, both pictures inlined as base64, the tables."""

from __future__ import annotations

import base64
import html
from decimal import ROUND_HALF_UP, Decimal

from batch_pipelines.services.audit import AuditReport

_CENT = Decimal("0.01")
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}.v-batch{color:#2e7d32}
"""


def _money(amount: Decimal) -> str:
    return f"${amount.quantize(_CENT, rounding=ROUND_HALF_UP):,}"


def _pct(share: Decimal) -> str:
    return f"{(share * 100).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def audit_html(report: AuditReport, source: str, hour_png: bytes, tag_png: bytes) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(g.tag)}</td><td>{e(g.model)}</td><td class=n>{g.calls:,}</td><td class=n>{_money(g.spend)}</td>"
        f"<td class=n>{_money(g.movable_spend)}</td><td class=n>{_money(g.saving_per_month)}</td>"
        f"<td class=v-{e(g.verdict.value.split(':')[0])}>{e(g.verdict.value)}</td><td>{e(g.reason)}</td></tr>"
        for g in report.groups
    )
    nothing = "".join(
        f"<li><b>{e(g.tag)} / {e(g.model)}</b>: {e(g.verdict.value)} ({e(g.case.value)}): {e(g.reason)}</li>"
        for g in report.nothing_saved()
    )
    bad = "".join(f"<li>line {row.line}: {e(row.problem)}</li>" for row in report.bad_listed)
    bad_counts = ", ".join(f"{e(problem)}: {count:,}" for problem, count in report.bad_by_problem.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Traffic audit: {e(source)}</title><style>{_STYLE}</style></head>
<body>
<h1>Traffic audit</h1>
<p>{e(source)}: {report.rows_read:,} calls over {report.days} day(s), {report.bad_rows:,} bad row(s).</p>
<p>Spend {_money(report.spend)}. Background work paid at the sync price: {_money(report.movable_spend)}
({_pct(report.movable_spend_share)} of the spend, {_pct(report.movable_token_share)} of the tokens).
Moving it to the batch lane saves <b>{_money(report.saving_per_day)} a day, {_money(report.saving_per_month)} a
month</b>.</p>
<h2>Spend per hour of day</h2>{_img(hour_png, "spend per hour of day: interactive, movable, already batched")}
<h2>Savings by tag</h2>{_img(tag_png, "savings a month by tag")}
<h2>By tag and model</h2>
<table><tr><th>tag</th><th>model</th><th>calls</th><th>spend</th><th>movable spend</th><th>saving a month</th>
<th>verdict</th><th>reason</th></tr>{rows}</table>
<h2>Where batch saves nothing</h2><ul>{nothing or "<li>none</li>"}</ul>
<h2>Bad rows</h2><p>{report.bad_rows:,} row(s){": " + bad_counts if bad_counts else ""}.</p><ul>{bad}</ul>
</body></html>
"""
