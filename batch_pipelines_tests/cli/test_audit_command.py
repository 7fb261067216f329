"""`batch-pipelines audit`: the report, valid PNGs of sane size, a self-contained HTML page, bad rows listed."""

import base64
import csv
import re
import struct

import orjson
from click.testing import CliRunner

from batch_pipelines.cli import main
from batch_pipelines.reports.charts import PNG_SIGNATURE

LOG = b"".join(
    orjson.dumps(
        {
            "time": f"2026-11-02T{h:02d}:15:00Z",
            "model": "claude-sonnet-4.6",
            "input_tokens": 40_000,
            "output_tokens": 2_000,
            "blocked": tag == "chat",
            "latency_budget_s": None if tag == "chat" else 86_400,
            "tag": tag,
        }
    )
    + b"\n"
    for h in range(24)
    for tag in ("chat", "reports", "reports", "reports")
    for _ in range(40)
)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the signature and the chunk's CRC layout."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def test_audit_writes_valid_pngs_html_json_and_bad_rows(tmp_path):
    """--out DIR: two PNGs of sane size, an HTML page with both inlined, the JSON report and bad_rows.csv."""
    log = tmp_path / "traffic.jsonl"
    log.write_bytes(LOG + b"{broken\n")
    result = CliRunner().invoke(main, ["audit", str(log), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "where batch saves nothing" in result.output
    assert "line 3841: not valid JSON" in result.output
    for name in ("spend_by_hour.png", "savings_by_tag.png"):
        data = (tmp_path / "out" / name).read_bytes()
        width, height = png_size(data)
        assert 400 <= width <= 2000 and 150 <= height <= 1500, (name, width, height)
        assert 5_000 < len(data) < 500_000
    page = (tmp_path / "out" / "audit.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(image)[:8] == PNG_SIGNATURE for image in images)
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "reports" in page and "latency_bound" in page
    report = orjson.loads((tmp_path / "out" / "audit.json").read_bytes())
    assert report["rows_read"] == 3840 and report["bad_rows"] == 1
    with (tmp_path / "out" / "bad_rows.csv").open(newline="") as handle:
        listed = list(csv.reader(handle))
    assert listed[0] == ["line", "problem"]
    assert [line for line, _ in listed[1:]] == ["3841"] and listed[1][1].startswith("not valid JSON")


def test_audit_json_has_shares_groups_and_monthly_saving(tmp_path):
    """--json: three quarters of the calls are movable background work; its saving is priced a day and a month."""
    log = tmp_path / "traffic.jsonl"
    log.write_bytes(LOG)
    result = CliRunner().invoke(main, ["audit", str(log), "--json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert report["movable_spend_share"] == "0.75"
    # 2,880 movable calls of 40k in + 2k out on claude-sonnet-4.6 save half of $0.15 each: $216 in one day
    assert report["saving_per_day_usd"] == "216.00"
    assert report["saving_per_month_usd"] == "6480.00"
    verdicts = {g["tag"]: g["verdict"] for g in report["groups"]}
    assert verdicts == {"reports": "batch", "chat": "sync"}


def test_audit_refuses_a_log_it_cannot_read(tmp_path):
    """A missing file, a bad --map and a log with no readable row exit 2 and say why."""
    runner = CliRunner()
    missing = runner.invoke(main, ["audit", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "not found" in missing.output
    log = tmp_path / "t.jsonl"
    log.write_bytes(LOG)
    bad_map = runner.invoke(main, ["audit", str(log), "--map", "tokens"])
    assert bad_map.exit_code == 2 and "column=field" in bad_map.output
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(b'{"time":"x","model":"gpt-5.4","input_tokens":1,"output_tokens":1,"blocked":true}\n')
    none = runner.invoke(main, ["audit", str(junk)])
    assert none.exit_code == 2 and "no row" in none.output
