"""`dg dev` end to end: the real daemon runs the completion sensor and the runs; GraphQL reads the proof.

Everything else in the suite drives Dagster in-process. This test is the one place where the
webserver, the daemon and the code server are separate processes talking to the emulator over
loopback, as they do under `make dev`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from batch_pipelines.dagster_layer.factory import SENSOR_INTERVAL_ENV
from batch_pipelines.dev import dagster_dev_command, group_alive, start_process_group, stop_process_group
from batch_pipelines.emulator import EMULATOR_URL_ENV
from batch_pipelines.emulator.testing import run_emulator

PROJECT_DIR = Path(__file__).resolve().parents[2]
LOCATION = "batch_pipelines.definitions"
REPOSITORY = "__repository__"
RESULTS_ASSET = ["classification_results"]
COMPLETION_SENSOR = "classification_completion_sensor"
CHECKS = ("success_rate_at_least", "cost_within_budget")
ROWS = 20
# Measured from the start of `dagster dev`. Results get whatever startup left of the overall
# deadline (a busy 2-core runner has needed ~120 s for the two runs), and teardown (<= 35 s)
# still fits in the 300 s timeout.
STARTUP_DEADLINE_S = 120.0
OVERALL_DEADLINE_S = 250.0
# These are real processes on a real clock, so the waits are bounded polls, not fixed sleeps.
POLL_INTERVAL_S = 1.0
# The sensor daemon loops every 5 s at best; 30 s (the default interval) would triple the wait.
SENSOR_INTERVAL_S = 5

INSTANCE_YAML = """\
telemetry:
  enabled: false
nux:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""

T = TypeVar("T")


@dataclass
class DagsterDev:
    url: str
    client: httpx.Client
    log_path: Path
    started_at: float  # time.monotonic() when `dagster dev` was started

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self.client.post(self.url + "/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), f"GraphQL errors: {body['errors']}"
        return body["data"]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_for(self, what: str, deadline_s: float, probe: Callable[[], T | None]) -> T:
        """Call ``probe`` until it returns something; fail with the server's log ``deadline_s`` after the start."""
        while True:
            found = probe()
            if found is not None:
                return found
            if time.monotonic() - self.started_at > deadline_s:
                pytest.fail(f"no {what} within {deadline_s:.0f} s of starting dagster dev; its log:\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL_S)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[DagsterDev]:
    """`dagster dev` on a throwaway instance and a fast emulator; the whole process group is stopped after."""
    # The gateway's ledger, results and work dirs default under home/batch_pipelines_data/.
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    port = _free_port()
    log_path = tmp_path / "dagster_dev.log"
    with run_emulator(profile="demo", time_scale=600.0, state_dir=tmp_path / "emulator") as emulator:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            EMULATOR_URL_ENV: emulator.base_url,
            SENSOR_INTERVAL_ENV: str(SENSOR_INTERVAL_S),
        }
        with log_path.open("wb") as log, httpx.Client(timeout=30.0) as client:
            process = start_process_group(
                dagster_dev_command(PROJECT_DIR / "workspace.yaml", port=port),
                env=env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                yield DagsterDev(f"http://127.0.0.1:{port}", client, log_path, started_at=time.monotonic())
            finally:
                stop_process_group(process)
                assert not group_alive(process.pid), "dagster dev left processes behind"


def _location_ready(dev: DagsterDev) -> bool | None:
    try:
        data = dev.graphql(
            """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
                 locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        )
    except httpx.HTTPError:
        return None  # the webserver is not listening, or not serving yet
    entries = {e["name"]: e for e in data["workspaceOrError"].get("locationEntries", [])}
    entry = entries.get(LOCATION)
    if entry is None or entry["loadStatus"] != "LOADED":
        return None
    error = entry["locationOrLoadError"]
    assert error["__typename"] == "RepositoryLocation", f"code location failed to load: {error.get('message')}"
    return True


def _sensor_status(dev: DagsterDev, name: str) -> str:
    data = dev.graphql(
        """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
             __typename ... on Sensor { sensorState { status } } ... on Error { message } } }""",
        s={"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name},
    )
    sensor = data["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    return sensor["sensorState"]["status"]


def _launch_submit_run(dev: DagsterDev, partition: str) -> str:
    data = dev.graphql(
        """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
             __typename ... on LaunchRunSuccess { run { runId } } ... on Error { message }
             ... on RunConfigValidationInvalid { errors { message } } } }""",
        p={
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": ["support_tickets"]}, {"path": ["classification_batch"]}],
            },
            # No executor config: the location's own executor (in-process, definitions.py) runs
            # both this run and the sensor's, as under `make dev`.
            "runConfigData": {
                "ops": {"support_tickets": {"config": {"rows": ROWS}}},
            },
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        },
    )
    launched = data["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def _runs(dev: DagsterDev) -> list[dict[str, Any]]:
    data = dev.graphql("""{ runsOrError(limit: 20) { ... on Runs { results { runId status tags { key value } } } } }""")
    return data["runsOrError"]["results"]


def _results_materialization(dev: DagsterDev, partition: str) -> dict[str, Any] | None:
    data = dev.graphql(
        """query($p: [String!]) { assetOrError(assetKey: {path: ["classification_results"]}) {
             ... on Asset { assetMaterializations(partitions: $p, limit: 1) { partition runId
               metadataEntries { label ... on IntMetadataEntry { intValue }
                 ... on FloatMetadataEntry { floatValue } } } } } }""",
        p=[partition],
    )
    events = (data["assetOrError"] or {}).get("assetMaterializations") or []
    return events[0] if events else None


def _check_executions(dev: DagsterDev, partition: str) -> dict[str, dict[str, Any]] | None:
    """The latest execution of each results check for ``partition``, once every one has ended."""
    latest = {}
    for name in CHECKS:
        data = dev.graphql(
            """query($k: AssetKeyInput!, $c: String!, $p: String) {
                 assetCheckExecutions(assetKey: $k, checkName: $c, partition: $p, limit: 1) {
                   runId status evaluation { success partition severity } } }""",
            k={"path": RESULTS_ASSET},
            c=name,
            p=partition,
        )
        executions = data["assetCheckExecutions"]
        if not executions or executions[0]["status"] == "IN_PROGRESS":
            return None
        latest[name] = executions[0]
    return latest


def _fail_on_failed_run(dev: DagsterDev, runs: list[dict[str, Any]]) -> None:
    failed = [r["runId"] for r in runs if r["status"] in ("FAILURE", "CANCELED")]
    if failed:
        pytest.fail(f"run(s) {failed} failed; dagster dev log:\n{dev.log_tail()}")


@pytest.mark.timeout(300)
def test_daemon_runs_sensor_and_results_reach_graphql(dagster_dev: DagsterDev):
    """Under `dagster dev`, a submitted partition is collected by the daemon's sensor run; metadata and checks show
    in GraphQL."""
    dev = dagster_dev
    partition = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    dev.wait_for("loaded code location", STARTUP_DEADLINE_S, lambda: _location_ready(dev))
    assert _sensor_status(dev, COMPLETION_SENSOR) == "RUNNING"

    submit_run = _launch_submit_run(dev, partition)

    def materialized() -> dict[str, Any] | None:
        _fail_on_failed_run(dev, _runs(dev))
        event = _results_materialization(dev, partition)
        if event is None:
            return None
        checks = _check_executions(dev, partition)
        return None if checks is None else {"event": event, "checks": checks}

    found = dev.wait_for("classification_results materialization with its checks", OVERALL_DEADLINE_S, materialized)

    event, checks = found["event"], found["checks"]
    assert event["partition"] == partition
    metadata = {e["label"]: e.get("intValue", e.get("floatValue")) for e in event["metadataEntries"]}
    assert metadata["items_total"] == ROWS
    assert 0.9 <= metadata["success_rate"] <= 1.0
    assert metadata["cost_usd"] > 0
    assert metadata["savings_pct"] > 0
    for name, execution in checks.items():
        assert execution["status"] == "SUCCEEDED", (name, execution)
        assert execution["evaluation"]["success"] is True, (name, execution)
        assert execution["evaluation"]["partition"] == partition, (name, execution)
        assert execution["runId"] == event["runId"], (name, execution)

    runs = {r["runId"]: {t["key"]: t["value"] for t in r["tags"]} for r in _runs(dev)}
    assert event["runId"] != submit_run
    assert runs[event["runId"]].get("dagster/sensor_name") == COMPLETION_SENSOR
    assert runs[event["runId"]].get("dagster/partition") == partition
