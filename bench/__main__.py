"""Run every benchmark (``make bench``), each in its own process so peak RSS is its own.

    python -m bench [--quick] [name ...]

Each benchmark prints its figures and the baseline it measured in the same run, and ends with
``TARGET <name>: <figure> vs <baseline or bound> met|missed``. This runner repeats the TARGET
lines at the end and exits 1 if any target was missed.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ("ledger", "emulator", "shard", "parse_results", "sync_lane", "router", "e2e", "audit", "economics")


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("-")] or list(BENCHMARKS)
    targets: list[str] = []
    for name in names:
        print(f"\n=== bench.{name}{' (quick)' if quick else ''} ===", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        print(proc.stdout, end="", flush=True)
        found = [line for line in proc.stdout.splitlines() if line.startswith("TARGET ")]
        if proc.returncode != 0 or not found:
            found.append(f"TARGET {name}: benchmark failed (exit {proc.returncode}) missed")
        targets.extend(found)
    print("\n=== targets ===")
    print("\n".join(targets))
    return 0 if all(t.endswith(" met") for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
