"""The script a user would write instead of this project: the end-to-end benchmark's baseline.

The official ``openai`` SDK, stdlib ``json`` and pandas; the same classification requests (the
workload's own ~8.8 KB bodies) sent to the same emulator; no ledger, no reconciliation, no
retries, no cost accounting beyond summing the reported tokens. Files are cut at 20,000 lines
(about 176 MB, under the Batch API's 200 MB file cap), as a user reading the limits would.

    python -m bench.naive_script --items N --base-url URL --api-key KEY --work-dir DIR

Prints one JSON line: the phases' seconds and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import httpx
import openai
import pandas as pd

from batch_pipelines.workloads import synthetic
from batch_pipelines.workloads.classification import SYSTEM, workload

LINES_PER_FILE = 20_000
MAX_POLL_PASSES = 1_000


def build_and_upload(client: openai.OpenAI, frame: pd.DataFrame, work_dir: Path) -> list[str]:
    """Write the request lines with stdlib json, upload each file and create its batch."""
    batch_ids = []
    records = frame.to_dict("records")
    for start in range(0, len(records), LINES_PER_FILE):
        path = work_dir / f"requests-{start // LINES_PER_FILE:04d}.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for row in records[start : start + LINES_PER_FILE]:
                line = {
                    "custom_id": row["ticket_id"],
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": workload.model,
                        "max_completion_tokens": 5,
                        "messages": [
                            {"role": "system", "content": SYSTEM},
                            {"role": "user", "content": f"Ticket: {row['body']}"},
                        ],
                    },
                }
                out.write(json.dumps(line) + "\n")
        with path.open("rb") as handle:
            uploaded = client.files.create(file=handle, purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch_ids.append(batch.id)
    return batch_ids


def wait_for(client: openai.OpenAI, batch_ids: list[str]) -> list[str]:
    """Poll each batch until it has ended (the emulator's clock was already moved past its end)."""
    output_files: dict[str, str] = {}
    for _ in range(MAX_POLL_PASSES):
        for batch_id in batch_ids:
            if batch_id in output_files:
                continue
            batch = client.batches.retrieve(batch_id)
            if batch.status in ("completed", "failed", "expired", "cancelled"):
                output_files[batch_id] = batch.output_file_id or ""
        if len(output_files) == len(batch_ids):
            return [output_files[b] for b in batch_ids]
    raise SystemExit(f"batches did not end after {MAX_POLL_PASSES} polling passes")


def download_and_parse(client: openai.OpenAI, output_file_ids: list[str], work_dir: Path) -> pd.DataFrame:
    """Download each output file, parse every line with stdlib json, one DataFrame, one Parquet file."""
    rows = []
    for file_id in output_file_ids:
        if not file_id:
            continue
        text = client.files.content(file_id).text
        for line in text.splitlines():
            if not line:
                continue
            record = json.loads(line)
            body = record["response"]["body"] if record.get("response") else None
            if body is None:
                rows.append({"ticket_id": record["custom_id"], "label": None, "error": str(record.get("error"))})
                continue
            usage = body["usage"]
            rows.append(
                {
                    "ticket_id": record["custom_id"],
                    "label": body["choices"][0]["message"]["content"].strip().lower(),
                    "prompt_tokens": usage["prompt_tokens"],
                    "cached_tokens": usage.get("prompt_tokens_details", {}).get("cached_tokens", 0),
                    "completion_tokens": usage["completion_tokens"],
                    "error": None,
                }
            )
    frame = pd.DataFrame(rows)
    frame.to_parquet(work_dir / "results.parquet")
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--base-url", required=True, help="the emulator's OpenAI base URL (…/v1)")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--partition", default="2026-11-26")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=600, max_retries=0)
    control = args.base_url.removesuffix("/v1") + "/_emulator/clock/advance"

    started = time.perf_counter()
    frame = synthetic.support_tickets(args.partition, rows=args.items)
    input_done = time.perf_counter()
    batch_ids = build_and_upload(client, frame, args.work_dir)
    submit_done = time.perf_counter()
    httpx.post(control, json={"seconds": 3600}, timeout=60).raise_for_status()
    output_files = wait_for(client, batch_ids)
    wait_done = time.perf_counter()
    results = download_and_parse(client, output_files, args.work_dir)
    results_done = time.perf_counter()
    print(
        json.dumps(
            {
                "input_s": input_done - started,
                "submit_s": submit_done - input_done,
                "wait_s": wait_done - submit_done,
                "results_s": results_done - wait_done,
                "wall_s": results_done - started,
                "rows": len(results),
                "labelled": int(results["label"].notna().sum()),
                "batches": len(batch_ids),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
