"""End to end, as the user waits for it: one partition through real Dagster against the script they would write.

The project side (``bench.e2e_project``) runs one partition of ``classification`` through a real
Dagster instance: input and submit assets, one completion-sensor tick, the results run. The
baseline (``bench.naive_script``) is the obvious script: the official ``openai`` SDK, stdlib
``json`` and pandas, the same requests, no ledger, no reconciliation, no retries. Each side runs
in its own process (its peak RSS is its own) against its own emulator in a third process (fresh
state, frozen clock moved past the batches' end by the side itself), back to back in this run.
Then the project alone at the large size, for ``classification`` and ``embedding_backfill``,
for peak RSS.

    python -m bench.e2e [--quick] [--items N] [--large N] [--no-large]

Per-phase rates are items per second of the phase: submit (the submit asset vs the script's
build-serialise-upload), results (the results asset vs the script's download-parse-Parquet).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench._subprocess import run_phase

PROFILE = {"validation_seconds": 1, "batch_completion_seconds": {"min": 10, "max": 10}, "finalizing_seconds": 1}
PEAK_RSS_BOUND_MB = 1024


def serve_emulator(state_dir: str) -> None:
    """Child mode: an emulator with a frozen clock and no faults, up until stdin closes."""
    from batch_pipelines.emulator.testing import run_emulator

    with run_emulator(PROFILE, state_dir=Path(state_dir), time_scale=0.0) as emu:
        print(json.dumps({"base_url": emu.base_url, "api_key": emu.api_key}), flush=True)
        sys.stdin.read()


@contextmanager
def emulator_process(state_dir: Path) -> Iterator[dict]:
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.e2e", "--serve-emulator", str(state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
        if not line:
            raise SystemExit("the emulator subprocess did not start (see its stderr above)")
        yield json.loads(line)
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_naive(items: int, root: Path) -> dict:
    with emulator_process(root / "naive-emulator") as emu:
        return run_phase(
            "bench.naive_script",
            "--items",
            str(items),
            "--base-url",
            emu["base_url"] + "/v1",
            "--api-key",
            emu["api_key"],
            "--work-dir",
            str(root / "naive"),
        )


def run_project(workload: str, items: int, root: Path) -> dict:
    with emulator_process(root / f"{workload}-emulator") as emu:
        return run_phase(
            "bench.e2e_project",
            "--workload",
            workload,
            "--items",
            str(items),
            "--emulator-url",
            emu["base_url"],
            "--work-dir",
            str(root / workload),
        )


def phase_table(items: int, ours: dict, naive: dict) -> list[str]:
    lines = [
        f"{'phase':<10} {'project s':>10} {'naive s':>10} {'project items/s':>16} {'naive items/s':>14} {'ratio':>6}"
    ]
    for phase in ("input", "submit", "wait", "results", "wall"):
        mine, theirs = ours[f"{phase}_s"], naive[f"{phase}_s"]
        lines.append(
            f"{phase:<10} {mine:>10.1f} {theirs:>10.1f} {items / mine:>16,.0f} {items / theirs:>14,.0f} "
            f"{theirs / mine:>6.2f}"
        )
    return lines


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 items against the script, 20,000 alone")
    parser.add_argument("--items", type=int, help="items per partition against the script (default 100,000)")
    parser.add_argument("--large", type=int, help="items for the project alone (default 1,000,000)")
    parser.add_argument("--no-large", action="store_true", help="skip the project-alone runs")
    parser.add_argument("--serve-emulator", metavar="STATE_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_emulator:
        serve_emulator(args.serve_emulator)
        return
    items = args.items or (10_000 if args.quick else 100_000)
    large = args.large or (20_000 if args.quick else 1_000_000)
    targets = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        root = Path(tmp)
        print(f"classification, {items:,} items, load average {load_average()}", flush=True)
        naive = run_naive(items, root)
        ours = run_project("classification", items, root)
        print(f"load average after: {load_average()}")
        print("\n".join(phase_table(items, ours, naive)))
        print(
            f"project: {ours['rows']:,} rows, {ours['succeeded']:,} succeeded, checks "
            f"{'passed' if ours['checks_passed'] else 'FAILED'}, {ours['ticks']} sensor tick(s), "
            f"peak RSS {ours['peak_rss_mb']:,.0f} MB (submit run {ours['submit_run_s']:.1f} s, "
            f"results run {ours['results_run_s']:.1f} s)"
        )
        print(f"naive:   {naive['rows']:,} rows in {naive['batches']} batches, peak RSS {naive['peak_rss_mb']:,.0f} MB")
        wall_ok = ours["rows"] == items and naive["rows"] == items and ours["wall_s"] <= naive["wall_s"]
        targets.append(
            f"TARGET e2e_wall: {naive['wall_s'] / ours['wall_s']:.2f}x the naive script's speed "
            f"({ours['wall_s']:.1f} s vs {naive['wall_s']:.1f} s) vs 1.00x {verdict(wall_ok)}"
        )
        submit_ratio = naive["submit_s"] / ours["submit_s"]
        targets.append(f"TARGET e2e_submit_rate: {submit_ratio:.2f}x vs 1.00x {verdict(submit_ratio >= 1.0)}")
        results_ratio = naive["results_s"] / ours["results_s"]
        targets.append(f"TARGET e2e_results_rate: {results_ratio:.2f}x vs 1.00x {verdict(results_ratio >= 1.0)}")
        if not args.no_large:
            for workload in ("classification", "embedding_backfill"):
                # One at a time, and the previous run's files gone, so disk and page cache are its own.
                for leftover in root.iterdir():
                    subprocess.run(["rm", "-rf", str(leftover)], check=True)
                print(f"\n{workload}, project alone, {large:,} items, load average {load_average()}", flush=True)
                alone = run_project(workload, large, root)
                print(
                    f"  wall {alone['wall_s']:.1f} s (input {alone['input_s']:.1f}, submit {alone['submit_s']:.1f}, "
                    f"wait {alone['wait_s']:.1f}, results {alone['results_s']:.1f}), {alone['rows']:,} rows, "
                    f"peak RSS {alone['peak_rss_mb']:,.0f} MB, load average after {load_average()}"
                )
                ok = alone["rows"] == large and alone["peak_rss_mb"] <= PEAK_RSS_BOUND_MB
                targets.append(
                    f"TARGET e2e_peak_rss_{workload}: {alone['peak_rss_mb']:,.0f} MB at {large:,} items "
                    f"vs {PEAK_RSS_BOUND_MB} MB {verdict(ok)}"
                )
    print("\n".join(targets))


if __name__ == "__main__":
    main()
