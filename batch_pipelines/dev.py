"""``batch-pipelines dev`` (``make dev``): the emulator and the Dagster UI side by side, on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from batch_pipelines.dagster_layer.resources import EMULATOR_URL_ENV


def run_dev(project_dir: Path, *, ui_port: int = 3000, emulator_port: int = 8765, time_scale: float = 60.0) -> int:
    home = project_dir / ".dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copyfile(project_dir / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), EMULATOR_URL_ENV: f"http://127.0.0.1:{emulator_port}"}
    bin_dir = Path(sys.executable).parent
    emulator = subprocess.Popen(
        [str(bin_dir / "batch-pipelines"), "emulator", "--port", str(emulator_port), "--state-dir", str(home / "emulator"),
         "--time-scale", str(time_scale)],
        env=env,
    )
    try:
        ui = subprocess.Popen(
            [str(bin_dir / "dagster"), "dev", "-w", str(project_dir / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(ui_port)],
            env=env,
            cwd=project_dir,
        )
        try:
            return ui.wait()
        except KeyboardInterrupt:
            ui.send_signal(signal.SIGINT)
            return ui.wait()
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
