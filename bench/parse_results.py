"""Benchmark: parse 1,000,000 batch output lines into the outcomes table and write it as Parquet.

The baseline is ``pyarrow.json.read_json`` with an explicit schema on the same file (parse
only, no Parquet). Ours must reach at least 0.8× its throughput while also reconciling every
custom id, building the outcomes table and writing Parquet, with peak RSS at most 1 GB. The
file mixes succeeded lines, failed lines (HTTP 400/500 inside the line) and, late in the file,
``batch_expired`` error lines. Each phase runs in its own subprocess (its own ru_maxrss).

    python -m bench.parse_results [--quick] [--n N]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import orjson

from bench._subprocess import run_phase as run_subprocess_phase

LABELS = ("billing", "shipping", "returns", "product_question", "account", "complaint", "other")


def write_output_file(path: Path, n: int) -> None:
    """A realistic OpenAI batch output file: ~2% failed lines, the last 1% expired."""
    with open(path, "wb") as handle:
        for i in range(n):
            custom_id = f"ticket-{i:07d}"
            if i >= n - n // 100:
                line = {
                    "id": f"batch_req_{i:012x}",
                    "custom_id": custom_id,
                    "response": None,
                    "error": {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion window expired.",
                    },
                }
            elif i % 50 == 7:
                status = 400 if i % 100 == 7 else 500
                line = {
                    "id": f"batch_req_{i:012x}",
                    "custom_id": custom_id,
                    "response": {
                        "status_code": status,
                        "request_id": f"req_{i:016x}",
                        "body": {
                            "error": {
                                "message": "Invalid 'messages[1].content': string too long.",
                                "type": "invalid_request_error",
                                "param": None,
                                "code": "string_above_max_length" if status == 400 else None,
                            }
                        },
                    },
                    "error": None,
                }
            else:
                line = {
                    "id": f"batch_req_{i:012x}",
                    "custom_id": custom_id,
                    "response": {
                        "status_code": 200,
                        "request_id": f"req_{i:016x}",
                        "body": {
                            "id": f"chatcmpl-{i:016x}",
                            "object": "chat.completion",
                            "created": 1_764_000_000 + i,
                            "model": "gpt-4o-mini-2024-07-18",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {
                                        "role": "assistant",
                                        "content": LABELS[i % len(LABELS)],
                                        "refusal": None,
                                        "annotations": [],
                                    },
                                    "logprobs": None,
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {
                                "prompt_tokens": 120 + i % 37,
                                "completion_tokens": 2,
                                "total_tokens": 122 + i % 37,
                                "prompt_tokens_details": {"cached_tokens": 64 if i % 3 else 0, "audio_tokens": 0},
                                "completion_tokens_details": {
                                    "reasoning_tokens": 0,
                                    "audio_tokens": 0,
                                    "accepted_prediction_tokens": 0,
                                    "rejected_prediction_tokens": 0,
                                },
                            },
                            "service_tier": "default",
                            "system_fingerprint": "fp_0ba0d124f1",
                        },
                    },
                    "error": None,
                }
            handle.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))


def phase_baseline(path: Path, n: int) -> dict:
    import pyarrow.json as pj

    from batch_pipelines.providers.results_parsing import OPENAI_LINE_SCHEMA

    started = time.perf_counter()
    table = pj.read_json(
        path, parse_options=pj.ParseOptions(explicit_schema=OPENAI_LINE_SCHEMA, unexpected_field_behavior="ignore")
    )
    seconds = time.perf_counter() - started
    assert table.num_rows == n
    return {"seconds": seconds, "rows": table.num_rows}


def phase_ours(path: Path, n: int, engine: str) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc

    from batch_pipelines.results.openai_bulk import write_openai_results_parquet

    # pyarrow.compute imports pandas on its first call (about 1-2 s here): a fixed cost per
    # process, not per line, so it is paid before the clock starts.
    pc.equal(pa.array([1]), pa.scalar(1))
    # The ids the ledger would hand over: built before the clock starts, converted inside it.
    expected = [f"ticket-{i:07d}" for i in range(n)]
    started = time.perf_counter()
    summary = write_openai_results_parquet(
        [path], expected, path.with_suffix(f".{engine}.parquet"), model="gpt-4o-mini", engine=engine
    )
    seconds = time.perf_counter() - started
    assert summary.rows == n, summary
    return {"seconds": seconds, "rows": summary.rows}


def run_phase(name: str, path: Path, n: int) -> dict:
    return run_subprocess_phase("bench.parse_results", "--phase", name, "--n", str(n), "--file", str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20,000 lines: a smoke run")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each phase counts")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.n or (20_000 if args.quick else 1_000_000)
    if args.phase:
        if args.phase == "baseline":
            result = phase_baseline(args.file, n)
        else:
            result = phase_ours(args.file, n, args.phase)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    phases = ("baseline", "pyarrow", "orjson")
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        path = Path(tmp) / "output.jsonl"
        write_output_file(path, n)
        size_mb = path.stat().st_size / 1e6
        results: dict[str, dict] = {}
        # Alternate the phases and keep each one's best round: the machine is shared.
        for round_number in range(args.rounds):
            for name in phases:
                if name == "orjson" and round_number:
                    continue  # the slow comparison engine: one round is evidence enough
                r = run_phase(name, path, n)
                best = results.get(name)
                if best is None or r["seconds"] < best["seconds"]:
                    results[name] = {**r, "peak_rss_mb": max(r["peak_rss_mb"], (best or r)["peak_rss_mb"])}
    print(f"input: {n:,} lines, {size_mb:.0f} MB; best of {args.rounds} rounds (orjson engine: 1 round)")
    labels = {
        "baseline": "pyarrow.json.read_json, explicit schema (parse only)",
        "pyarrow": "ours, pyarrow.json engine -> outcomes -> Parquet",
        "orjson": "ours, orjson per line -> outcomes -> Parquet",
    }
    for name in phases:
        r = results[name]
        print(
            f"{labels[name]:55s} {r['seconds']:6.2f} s {n / r['seconds']:>10,.0f} lines/s  peak RSS "
            f"{r['peak_rss_mb']:5.0f} MB"
        )
    ratio = results["baseline"]["seconds"] / results["pyarrow"]["seconds"]
    rss = results["pyarrow"]["peak_rss_mb"]
    print(
        f"TARGET parse_results_throughput: {ratio:.2f}x vs 0.80x of pyarrow.json.read_json "
        f"{'met' if ratio >= 0.8 else 'missed'}"
    )
    print(f"TARGET parse_results_peak_rss: {rss:.0f} MB vs 1024 MB {'met' if rss <= 1024 else 'missed'}")


if __name__ == "__main__":
    main()
