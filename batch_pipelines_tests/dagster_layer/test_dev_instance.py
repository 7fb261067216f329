"""The local instance as a person meets it: schedule, latest partition, executor, logs, `dg dev`."""

import io
import logging
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx
import yaml

from batch_pipelines.dev import copy_without_sensor_chatter, dagster_dev_command, is_sensor_chatter
from batch_pipelines.providers.retry import NO_WAIT, send_with_retry
from batch_pipelines.workloads import classification

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _repo() -> dg.RepositoryDefinition:
    from batch_pipelines.definitions import defs

    return defs.get_repository_def()


def test_nightly_schedule_is_partitioned_and_targets_yesterday():
    """The nightly schedule names its partitions and, at 01:00, requests the day before."""
    schedule = _repo().get_schedule_def("nightly_submit_schedule")
    job = _repo().get_job("nightly_submit")
    assert isinstance(job.partitions_def, dg.DailyPartitionsDefinition)
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 5, 1, 0, tzinfo=UTC))
    requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert [r.partition_key for r in requests] == ["2026-03-04"]


def test_latest_daily_partition_offered_is_yesterday():
    """The UI's latest daily partition is the last complete day, the one the schedule submits."""
    now = datetime(2026, 3, 5, 14, 30, tzinfo=UTC)
    with dg.partition_loading_context(effective_dt=now):
        assert classification.daily.get_last_partition_key() == "2026-03-04"


def test_project_location_runs_steps_in_process():
    """The project's own location uses the in-process executor: no subprocess per step."""
    assert _repo().get_job("nightly_submit").executor_def.name == "in_process"


def test_dev_instance_captures_the_package_logger():
    """dagster.yaml has Dagster capture the `batch_pipelines` logger at INFO."""
    settings = yaml.safe_load((PROJECT_DIR / "dagster.yaml").read_text())
    assert settings["python_logs"]["managed_python_loggers"] == ["batch_pipelines"]
    assert settings["python_logs"]["python_log_level"] == "INFO"


def test_vendor_retries_are_logged_without_the_query_string(caplog):
    """A retried 429 is logged at INFO under batch_pipelines, with method and path but no query (keys live there)."""
    answers = iter([httpx.Response(429, headers={"retry-after": "0"}), httpx.Response(200, json={})])
    client = httpx.Client(transport=httpx.MockTransport(lambda request: next(answers)))
    with caplog.at_level(logging.INFO, logger="batch_pipelines"):
        send_with_retry(client, lambda: client.build_request("GET", "https://v.test/v1/batches?key=sekrit"), NO_WAIT)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("batch_pipelines")]
    assert any("GET /v1/batches: HTTP 429 on attempt 1" in m for m in messages)
    assert not any("sekrit" in m for m in messages)


def test_dev_command_is_dg_dev():
    """`make dev` starts `dg dev` (the supported command), not the superseded `dagster dev`."""
    argv = dagster_dev_command(Path("/w/workspace.yaml"), port=3000)
    assert Path(argv[0]).name == "dg" and argv[1:4] == ["dev", "-w", "/w/workspace.yaml"]
    assert Path(argv[0]).exists()


def test_sensor_chatter_is_dropped_and_the_rest_kept():
    """The daemon's per-tick "Checking…"/"No run requests…" lines are dropped; launches and errors are kept."""
    log = (
        b"2026-12-02 - dagster.daemon.SensorDaemon - INFO - Checking for new runs for sensor: evals_completion_sensor\n"
        b"2026-12-02 - dagster.daemon.SensorDaemon - INFO - No run requests returned for evals_completion_sensor, "
        b"skipping\n"
        b"2026-12-02 - dagster.daemon.SensorDaemon - INFO - Launching run for evals_completion_sensor\n"
        b"2026-12-02 - dagster - ERROR - something broke\n"
    )
    sink = io.BytesIO()
    copy_without_sensor_chatter(io.BytesIO(log), sink)
    kept = sink.getvalue().decode().splitlines()
    assert len(kept) == 2 and "Launching run" in kept[0] and "ERROR" in kept[1]
    assert not is_sensor_chatter("Completed launch of run abc for evals_completion_sensor")
