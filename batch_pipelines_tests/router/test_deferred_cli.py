"""`batch-pipelines deferred status|flush|collect` against a ledger and the emulator."""

from __future__ import annotations

import orjson
from click.testing import CliRunner

from batch_pipelines.cli import main
from batch_pipelines_tests.router.conftest import chat, make_router


def _run(emu, ledger_url: str, *args: str):
    env = {"BATCH_PIPELINES_EMULATOR_URL": emu.base_url}
    return CliRunner().invoke(main, ["deferred", *args, "--ledger", ledger_url], env=env)


def test_status_flush_all_and_collect_by_hand(emu, vtime, tmp_path):
    """status shows the waiting calls; flush --all sends them; collect answers them once the batch ends."""
    router = make_router(emu, vtime, tmp_path)
    ids = [router.call(chat(i)).id for i in range(4)]
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    try:
        status = _run(emu, ledger_url, "status", "--json")
        assert status.exit_code == 0, status.output
        payload = orjson.loads(status.output)
        assert payload["waiting"] == 4 and payload["groups"][0]["due"] is False

        waits = _run(emu, ledger_url, "flush")
        assert waits.exit_code == 0 and "flushed 0 calls" in waits.output

        flushed = _run(emu, ledger_url, "flush", "--all")
        assert flushed.exit_code == 0, flushed.output
        assert "flushed 4 calls in 1 flushes: 4 to the batch lane, 0 to the sync lane" in flushed.output
        assert "waiting calls: 0" in _run(emu, ledger_url, "status").output

        vtime.advance(3600)
        collected = _run(emu, ledger_url, "collect")
        assert collected.exit_code == 0, collected.output
        assert "collected 1 flushes" in collected.output
        assert {h.status for h in router.get_many(ids)} == {"succeeded"}
    finally:
        router.close()


def test_a_bad_ledger_url_is_a_clear_error(emu, tmp_path):
    """An unsupported ledger URL exits non-zero naming the problem, with no traceback."""
    result = _run(emu, "mysql://x@y/z", "status")
    assert result.exit_code == 1
    assert "SQLite and PostgreSQL" in result.output and "Traceback" not in result.output


def test_no_provider_named_is_a_clear_error(tmp_path, monkeypatch):
    """Without --providers or --emulator (nor its variable) the command exits naming both, sending nothing."""
    monkeypatch.delenv("BATCH_PIPELINES_EMULATOR_URL", raising=False)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    result = CliRunner().invoke(main, ["deferred", "status", "--ledger", ledger_url])
    assert result.exit_code == 1
    assert "providers_file" in result.output and "emulator_url" in result.output and "Traceback" not in result.output
