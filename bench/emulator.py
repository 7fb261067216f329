"""Emulator batch throughput: lines per second validated, answered and written to output.

Uploads a bulk-classification workload (a short system prompt listing the labels and a
distinct ticket per line) as files of at most 50,000 lines, creates the batches on a frozen
clock, then times from the batches' creation until every line has been validated and answered
(the emulator's background worker does that work from creation; reads only admit it). A second,
smaller run uses a ~1,400-token shared system prompt (the cache-friendly shape, where every
line also pays prefix-cache hashing) and is reported for information. The baseline, measured in
the same run, is a bare orjson parse-and-serialise of the same lines; the target is a ratio to it.

    .venv/bin/python -m bench.emulator [--quick] [--lines N]
"""

from __future__ import annotations

import argparse
import time

import httpx
import orjson

from batch_pipelines.emulator.testing import run_emulator

# The emulator's rate as a share of a bare orjson parse-and-serialise of the same lines, both
# measured in the same run, so the verdict does not depend on how busy the machine is. 0.12
# is the bar the old absolute target (50,000 lines/s) set against the 413,782 lines/s baseline
# measured beside it on 2026-11-27.
TARGET_RATIO = 0.12
LINES_PER_FILE = 50_000
LABELS = ["billing", "shipping", "technical", "account", "refund", "feedback"]
SYSTEM_PROMPT = (
    "You are a support-ticket classifier for an online retailer. Read the ticket and answer with "
    "exactly one label from the list below, and nothing else.\n"
    f"Labels: {', '.join(LABELS)}\n\n"
    + "\n".join(
        f"Guideline {i}: when a customer mentions topic {i} together with an order, a payment, a parcel or an "
        "account, prefer the most specific label; ignore greetings, signatures and quoted earlier messages."
        for i in range(1, 34)
    )
)
WORDS = "order parcel late card charged twice password login refund broken screen thanks great app slow".split()


SHORT_SYSTEM_PROMPT = f"Classify the support ticket; answer with one label only.\nLabels: {', '.join(LABELS)}"


def request_lines(count: int, start: int, system: str = SHORT_SYSTEM_PROMPT) -> list[bytes]:
    lines = []
    for i in range(start, start + count):
        ticket = " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(12)) + f" ticket {i}"
        lines.append(
            orjson.dumps(
                {
                    "custom_id": f"t-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "gpt-5.4-mini",
                        "max_completion_tokens": 5,
                        "messages": [{"role": "system", "content": system}, {"role": "user", "content": ticket}],
                    },
                }
            )
        )
    return lines


def baseline(lines: list[bytes]) -> float:
    started = time.perf_counter()
    for line in lines:
        orjson.dumps(orjson.loads(line))
    return len(lines) / (time.perf_counter() - started)


def run(emu, http: httpx.Client, total: int, system: str) -> tuple[float, int, list[bytes]]:
    """Upload every file first, then time from the batches' creation until every line is answered.

    The emulator answers a batch's lines on a background worker from its creation, so the clock
    starts before the first create and stops once a read finds every batch completed.
    """
    file_ids = []
    first_file: list[bytes] = []
    for start in range(0, total, LINES_PER_FILE):
        lines = request_lines(min(LINES_PER_FILE, total - start), start, system)
        first_file = first_file or lines
        upload = http.post(
            "/files", data={"purpose": "batch"}, files={"file": ("tickets.jsonl", b"\n".join(lines) + b"\n")}
        )
        upload.raise_for_status()
        file_ids.append(upload.json()["id"])
    started = time.perf_counter()
    batch_ids = []
    for file_id in file_ids:
        created = http.post(
            "/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        )
        created.raise_for_status()
        batch_ids.append(created.json()["id"])
    emu.advance(60)
    waiting = list(batch_ids)
    while waiting:  # a read waits at most 10 s for unfinished work, then says 'validating'
        batch = http.get(f"/batches/{waiting[0]}").json()
        if batch["status"] == "validating":
            continue
        assert batch["status"] == "completed", batch["status"]
        assert batch["request_counts"]["completed"] == batch["request_counts"]["total"]
        waiting.pop(0)
    elapsed = time.perf_counter() - started
    cached = sum(emu.stats()["usage"][b]["cached_tokens"] for b in batch_ids)
    return total / elapsed, cached, first_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 20,000-line smoke run")
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    total = 20_000 if args.quick else args.lines
    long_total = 5_000 if args.quick else 20_000  # 7 KB lines: 20,000 stay under the 200 MB file cap
    profile = {"validation_seconds": 1, "batch_completion_seconds": {"min": 10, "max": 10}, "finalizing_seconds": 1}
    with (
        run_emulator(profile) as emu,
        httpx.Client(
            base_url=emu.openai_base_url, headers={"Authorization": f"Bearer {emu.api_key}"}, timeout=600
        ) as http,
    ):
        rate, _, lines = run(emu, http, total, SHORT_SYSTEM_PROMPT)
        long_rate, long_cached, long_lines = run(emu, http, long_total, SYSTEM_PROMPT)
    floor = baseline(lines)
    long_floor = baseline(long_lines)
    print(f"emulator: {total:,} classification lines ({len(lines[0])} bytes each) processed at {rate:,.0f} lines/s")
    print(f"  baseline: orjson parse+serialise of the same lines {floor:,.0f} lines/s")
    print(
        f"emulator (info): {long_total:,} lines with a ~1,400-token shared prompt ({len(long_lines[0])} bytes) "
        f"at {long_rate:,.0f} lines/s, {long_cached:,} cached tokens"
    )
    print(f"  baseline: orjson parse+serialise of the same lines {long_floor:,.0f} lines/s")
    ratio = rate / floor
    verdict = "met" if ratio >= TARGET_RATIO else "missed"
    print(f"TARGET emulator: {ratio:.3f}x of orjson parse+serialise ({rate:,.0f} lines/s) vs {TARGET_RATIO}x {verdict}")


if __name__ == "__main__":
    main()
