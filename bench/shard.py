"""Benchmark: shard 1,000,000 chat requests into batch files vs a minimal orjson line writer.

Both phases consume the same generated records (≈300-character shared system prompt,
≈200-character user message) and write JSONL to disk. Each phase runs in its own subprocess so
its peak RSS (ru_maxrss) is its own. Targets: throughput at least 0.9× the baseline's, peak RSS
at most 300 MB.

    python -m bench.shard [--quick] [--n N]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench._subprocess import run_phase as run_subprocess_phase

SYSTEM_PROMPT = (
    "You are a support-ticket classifier for an online retailer. Read the customer's message and "
    "answer with exactly one label from this list: billing, shipping, returns, product_question, "
    "account, complaint, other. Do not explain. If several labels fit, choose the most specific "
    "one. Answer in lower case, with no punctuation."
)
_WORDS = (
    "my order arrived late and the box was damaged so I would like to know whether I can get a refund "
    "or a replacement before the weekend because it was meant to be a present for my sister who is "
    "travelling abroad next week and I need the invoice for my records as well thank you very much"
)


def records(n: int) -> Iterator:
    from batch_pipelines.core.requests import Endpoint, LLMRequest

    system = {"role": "system", "content": SYSTEM_PROMPT}
    span = len(_WORDS) - 200
    for i in range(n):
        start = (i * 7) % span
        body = {
            "model": "gpt-4o-mini",
            "messages": [system, {"role": "user", "content": f"#{i} " + _WORDS[start : start + 195]}],
            "max_tokens": 5,
        }
        yield LLMRequest(f"ticket-{i:07d}", Endpoint.CHAT, "gpt-4o-mini", body)


def phase_baseline(n: int, out: Path) -> dict:
    import orjson

    started = time.perf_counter()
    written = 0
    with open(out / "baseline.jsonl", "wb") as handle:
        for r in records(n):
            line = orjson.dumps(
                {"custom_id": r.custom_id, "method": "POST", "url": r.endpoint.value, "body": r.body},
                option=orjson.OPT_APPEND_NEWLINE,
            )
            handle.write(line)
            written += len(line)
    return {"seconds": time.perf_counter() - started, "bytes": written, "files": 1}


def phase_sharder(n: int, out: Path) -> dict:
    from batch_pipelines.core.shard_rules import ShardLimits
    from batch_pipelines.providers.sharding import shard_requests

    started = time.perf_counter()
    # As submit_partition calls it: ids were already checked unique across the partition.
    shards = shard_requests(
        records(n), ShardLimits(max_requests=50_000, max_bytes=200_000_000), out / "shards", check_unique_ids=False
    )
    seconds = time.perf_counter() - started
    assert sum(s.request_count for s in shards) == n
    return {"seconds": seconds, "bytes": sum(s.byte_size for s in shards), "files": len(shards)}


PHASES = {"baseline": phase_baseline, "sharder": phase_sharder}


def run_phase(name: str, n: int, out: Path) -> dict:
    return run_subprocess_phase("bench.shard", "--phase", name, "--n", str(n), "--out", str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20,000 records: a smoke run")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each phase counts")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.n or (20_000 if args.quick else 1_000_000)
    if args.phase:
        result = PHASES[args.phase](n, args.out)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    # Alternate the phases and keep each one's best round: the machine is shared, and a
    # neighbour's burst of CPU should not decide the verdict.
    results: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name in ("baseline", "sharder"):
            with tempfile.TemporaryDirectory(prefix="bench-shard-") as tmp:
                r = run_phase(name, n, Path(tmp))
            best = results.get(name)
            if best is None or r["seconds"] < best["seconds"]:
                results[name] = {**r, "peak_rss_mb": max(r["peak_rss_mb"], (best or r)["peak_rss_mb"])}
    for name, r in results.items():
        rate = n / r["seconds"]
        print(
            f"{name:9s} (best of {args.rounds}) {n:>9,} records  {r['seconds']:6.2f} s  {rate:>10,.0f} records/s  "
            f"{r['bytes'] / 1e6:7.1f} MB in {r['files']} file(s)  peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    ratio = results["baseline"]["seconds"] / results["sharder"]["seconds"]
    rss = results["sharder"]["peak_rss_mb"]
    print(f"TARGET shard_throughput: {ratio:.2f}x vs 0.90x of orjson line writer {'met' if ratio >= 0.9 else 'missed'}")
    print(f"TARGET shard_peak_rss: {rss:.0f} MB vs 300 MB {'met' if rss <= 300 else 'missed'}")


if __name__ == "__main__":
    main()
