"""The reference day (issue 10): one simulated day of mixed traffic through the real system, its bill and TARGETs.

The router (interactive now, deferrable through the buffer and its flush), the deadline
watchdog, the nightly workloads through the gateway, the ledger on SQLite and both lanes over
loopback HTTP to the emulator's ``realistic`` profile on its virtual clock. Prints the table
(realised bill against all-sync and the perfect-foresight optimum, misses, paid twice, lost,
calls by lane) and ``TARGET economics_…`` lines.

    python -m bench.economics [--quick] [--scale F]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from batch_pipelines.core.day_report import format_table, target_lines
from batch_pipelines.core.day_traffic import TrafficConfig
from batch_pipelines.reference_day import simulate_day

QUICK_SCALE = 0.001  # 200 application calls and 50 workload items over the same 24 hours


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.economics")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run at scale {QUICK_SCALE}")
    parser.add_argument("--scale", type=float, default=None, help="calls and items times this (default 1)")
    args = parser.parse_args(argv)
    scale = args.scale if args.scale is not None else QUICK_SCALE if args.quick else 1.0
    config = TrafficConfig().scaled(scale) if scale != 1.0 else TrafficConfig()
    print(f"reference day at scale {scale}: {config.calls:,} application calls, "
          f"{sum(n for _, n in config.workloads.values()):,} workload items", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-economics-") as work:
        run = simulate_day(config, Path(work), echo=lambda line: print(line, flush=True))
    print(format_table(run.figures))
    for event in run.events:
        print(f"note: {event}")
    for line in target_lines(run.figures):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
