"""``batch-pipelines dev`` (``make dev``): the emulator and the Dagster UI side by side, on loopback.

Both children run in process groups of their own, so stopping is one controlled path: Ctrl-C,
SIGTERM or SIGHUP to ``batch-pipelines dev`` sends SIGTERM to each whole group (``dg dev``'s
webserver, daemon and code servers included), waits, then SIGKILLs what is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from batch_pipelines.emulator import EMULATOR_URL_ENV

SHUTDOWN_GRACE_SECONDS = 30.0
EMULATOR_READY_SECONDS = 30.0
_POLL_SECONDS = 0.2

# `dagster dev` maps SIGTERM onto whatever its SIGINT disposition is. A process started with `&`
# by a shell without job control (a script, CI, `make dev &`) inherits SIGINT *ignored*, and then
# SIGTERM is ignored too: nothing but SIGKILL stops it, and SIGKILL leaves its children behind.
# Resetting SIGINT to the default before exec makes SIGTERM work however we were started.
_EXEC_WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


def dagster_dev_command(workspace: Path, *, port: int, host: str = "127.0.0.1") -> list[str]:
    """``dg dev`` (webserver + daemon) for ``workspace``, from this environment's bin dir.

    ``dg dev`` supersedes ``dagster dev`` in Dagster 1.13 (which prints a SupersessionWarning);
    given ``-w`` it starts the same webserver and daemon.
    """
    return [str(Path(sys.executable).parent / "dg"), "dev", "-w", str(workspace), "-h", host, "-p", str(port)]


# The daemon logs two INFO lines per sensor per tick; with four workloads' sensors every few
# seconds they were about 75% of the `make dev` log. Runs launched, failures and warnings stay.
_SENSOR_CHATTER = ("Checking for new runs for sensor: ", "No run requests returned for ")


def is_sensor_chatter(line: str) -> bool:
    """Whether ``line`` is the daemon's routine "checking"/"skipping" line for a sensor tick."""
    return any(marker in line for marker in _SENSOR_CHATTER)


def copy_without_sensor_chatter(source: IO[bytes], sink: IO[bytes]) -> None:
    """Copy ``source`` to ``sink`` line by line, dropping sensor chatter, until ``source`` ends."""
    for raw in iter(source.readline, b""):
        if not is_sensor_chatter(raw.decode(errors="replace")):
            sink.write(raw)
            sink.flush()


def start_process_group(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None, **popen: Any
) -> subprocess.Popen[Any]:
    """Start ``argv`` as the leader of a new session, with SIGINT at its default disposition."""
    return subprocess.Popen(
        [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGINT, *argv],
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        **popen,
    )


def stop_process_group(process: subprocess.Popen[Any], *, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
    """SIGTERM the process's whole group, SIGKILL whatever is still there after ``grace_seconds``.

    Returns once the leader is reaped and no process of the group is left.
    """
    pgid = process.pid  # leader of its own session: the group id is its pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    try:
        while time.monotonic() < deadline:
            process.poll()
            if process.returncode is not None and not group_alive(pgid):
                return
            time.sleep(_POLL_SECONDS)
    finally:
        # Also when the wait is cut short (a test timeout firing here): never leave the group running.
        if process.poll() is None or group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
            process.wait()
    # Orphans are reaped by init; give it a moment so callers can check the group is gone.
    deadline = time.monotonic() + 5.0
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)


def group_alive(pgid: int) -> bool:
    """Whether any process (zombies included) is still in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_for_emulator(
    base_url: str, process: subprocess.Popen[Any], *, timeout: float = EMULATOR_READY_SECONDS
) -> None:
    """Return once the emulator answers its health check; raise if it exits or stays silent."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the emulator exited with status {process.returncode} before it was ready (port in use?)"
                )
            try:
                if client.get(base_url + "/_emulator/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(_POLL_SECONDS)
    raise RuntimeError(f"the emulator at {base_url} did not answer within {timeout:.0f} s")


class _Stop(Exception):
    """SIGTERM or SIGHUP arrived: stop the children as for Ctrl-C."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def run_dev(project_dir: Path, *, ui_port: int = 3000, emulator_port: int = 8765, time_scale: float = 60.0) -> int:
    home = project_dir / ".dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copyfile(project_dir / "dagster.yaml", home / "dagster.yaml")
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    env = {**os.environ, "DAGSTER_HOME": str(home), EMULATOR_URL_ENV: emulator_url}
    bin_dir = Path(sys.executable).parent
    # Without these, SIGTERM would end this process at once and orphan both children.
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)
    children: list[subprocess.Popen[Any]] = []
    try:
        emulator = start_process_group(
            [
                str(bin_dir / "batch-pipelines"),
                "emulator",
                "--port",
                str(emulator_port),
                "--state-dir",
                str(home / "emulator"),
                "--time-scale",
                str(time_scale),
            ],
            env=env,
        )
        children.append(emulator)
        wait_for_emulator(emulator_url, emulator)
        # cwd=home: Dagster warns about a dagster.yaml in the working folder that is not
        # DAGSTER_HOME's. The gateway's files live in home/batch_pipelines_data, a name that
        # cannot shadow the package when the code location puts its cwd on sys.path.
        ui = start_process_group(
            dagster_dev_command(project_dir / "workspace.yaml", port=ui_port),
            env=env,
            cwd=home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        children.append(ui)
        assert ui.stdout is not None
        threading.Thread(target=copy_without_sensor_chatter, args=(ui.stdout, sys.stdout.buffer), daemon=True).start()
        while True:
            if ui.poll() is not None:
                return ui.returncode
            if emulator.poll() is not None:
                print(
                    f"batch-pipelines dev: the emulator exited with status {emulator.returncode}; stopping",
                    file=sys.stderr,
                )
                return 1
            time.sleep(_POLL_SECONDS)
    except (KeyboardInterrupt, _Stop):
        return 0
    except RuntimeError as exc:
        print(f"batch-pipelines dev: {exc}", file=sys.stderr)
        return 1
    finally:
        # A repeated signal while stopping (make re-sends SIGTERM to its children; a second Ctrl-C)
        # must not cut the cleanup short and leave the children running.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        for child in reversed(children):
            stop_process_group(child)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
