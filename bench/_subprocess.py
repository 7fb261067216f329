"""Running one benchmark phase in its own process, so its peak RSS and page cache are its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_phase(module: str, *args: str) -> dict:
    """``python -m module *args`` after a sync; its last stdout line is the phase's JSON result."""
    # Flush the previous phase's dirty pages first, so its writeback does not land on this one.
    os.sync()
    proc = subprocess.run([sys.executable, "-m", module, *args], check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])
