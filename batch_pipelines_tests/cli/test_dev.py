"""The process-group helpers behind `batch-pipelines dev` and the `dagster dev` test, on tiny real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import dagster as dg
import pytest

from batch_pipelines.dagster_layer.factory import SENSOR_INTERVAL_ENV, batch_workload
from batch_pipelines.dev import group_alive, start_process_group, stop_process_group
from batch_pipelines.workloads import classification

# A parent that ignores SIGTERM with a child that does too: only SIGKILL to the group ends both.
STUBBORN = (
    "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    "subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, "
    "signal.SIG_IGN); time.sleep(60)']);"
    "print('ready', flush=True); time.sleep(60)"
)


def test_started_child_has_default_sigint_even_when_parent_ignores_it():
    """A child started while SIGINT is ignored (background, no job control) still gets SIGINT's default, so SIGTERM
    can stop dagster dev."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        probe = start_process_group(
            [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"],
            env=os.environ,
            stdout=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    out, _ = probe.communicate(timeout=30)
    assert out.strip() == "False"


def test_stop_kills_the_whole_group_when_sigterm_is_ignored():
    """Stopping SIGKILLs the group after the grace period, the leader's children included."""
    process = start_process_group([sys.executable, "-c", STUBBORN], env=os.environ, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    stop_process_group(process, grace_seconds=0.5)
    assert process.returncode == -signal.SIGKILL
    assert not group_alive(process.pid)


def test_stop_is_graceful_when_the_group_obeys_sigterm():
    """A group that exits on SIGTERM is not SIGKILLed."""
    process = start_process_group(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"],
        env=os.environ,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    stop_process_group(process, grace_seconds=30)
    assert process.returncode == -signal.SIGTERM
    assert not group_alive(process.pid)


def test_sensor_interval_comes_from_the_environment(monkeypatch):
    """BATCH_PIPELINES_SENSOR_INTERVAL_SECONDS sets both sensors' minimum interval."""
    monkeypatch.setenv(SENSOR_INTERVAL_ENV, "5")
    defs = batch_workload(classification.workload)
    assert defs.sensor.minimum_interval_seconds == 5
    assert defs.deadline_sensor.minimum_interval_seconds == 5


@pytest.mark.parametrize("bad", ["0", "-3", "2.5", "soon"])
def test_sensor_interval_refuses_a_bad_value(monkeypatch, bad):
    """An interval that is not a whole number of seconds >= 1 is refused, naming the variable."""
    monkeypatch.setenv(SENSOR_INTERVAL_ENV, bad)
    with pytest.raises(dg.DagsterInvalidDefinitionError, match=SENSOR_INTERVAL_ENV):
        batch_workload(classification.workload)


def test_sensor_interval_defaults_to_thirty_seconds(monkeypatch):
    """Without the variable the sensors poll every 30 s."""
    monkeypatch.delenv(SENSOR_INTERVAL_ENV, raising=False)
    assert batch_workload(classification.workload).sensor.minimum_interval_seconds == 30
