"""Sync lane benchmark: our async sync lane against the official AsyncOpenAI client.

Both clients make the same chat calls, at the same concurrency, to the bundled emulator running
in a subprocess (so the server does not share the benchmark's interpreter), in interleaved
slices; each client's figure is its calls over its total time (the median slice is printed too).

The per-call overhead our client adds is measured without any server at all: each client calls
an in-memory responder that answers instantly, one call at a time, so the whole per-call time
is client work (request building, rate limiter, retry wrapper, httpx, JSON and usage parsing).

    python -m bench.sync_lane [--calls N] [--concurrency C] [--slice S] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import httpx2
import openai

from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.providers.client import build_client
from batch_pipelines.providers.config import ProviderConfig, RateLimits
from batch_pipelines.providers.retry import RetryPolicy

MODEL = "gpt-5.4-mini"
OVERHEAD_BOUND_MS = 1.0
CANNED = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "positive"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 31,
            "completion_tokens": 2,
            "total_tokens": 33,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
).encode()


def chat_bodies(count: int) -> list[dict]:
    return [
        {
            "model": MODEL,
            "max_tokens": 8,
            "messages": [
                {"role": "system", "content": "Label the sentiment as positive, negative or neutral."},
                {"role": "user", "content": f"Review {i}: the delivery was quick and the product works."},
            ],
        }
        for i in range(count)
    ]


def provider(base_url: str, api_key: str, concurrency: int) -> ProviderConfig:
    return ProviderConfig(
        name="emulator",
        protocol="openai",
        base_url=base_url,
        api_key_env="BENCH_KEY",
        api_key=api_key,
        models=["*"],
        rate_limits=RateLimits(max_concurrency=concurrency),
    )


# --- the emulator, in its own process -------------------------------------------------------


def serve_emulator() -> None:
    """Child mode: start the emulator, print its URLs, stay up until stdin closes."""
    from batch_pipelines.emulator.testing import run_emulator

    with run_emulator(time_scale=0.0) as emu:
        print(json.dumps({"openai_base_url": emu.openai_base_url, "api_key": emu.api_key}), flush=True)
        sys.stdin.read()


@contextmanager
def emulator_process() -> Iterator[dict]:
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.sync_lane", "--serve-emulator"],
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
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# --- throughput -----------------------------------------------------------------------------


async def openai_slice(client: openai.AsyncOpenAI, bodies: list[dict], concurrency: int) -> float:
    pending = iter(bodies)
    answered = 0

    async def worker() -> None:
        nonlocal answered
        for body in pending:
            completion = await client.chat.completions.create(**body)
            answered += completion.usage is not None

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    assert answered == len(bodies), f"AsyncOpenAI: {answered} of {len(bodies)} calls answered with usage"
    return elapsed


async def ours_slice(lane, requests: list[LLMRequest], concurrency: int) -> float:
    started = time.perf_counter()
    outcomes = await lane.run_many(requests, concurrency=concurrency)
    elapsed = time.perf_counter() - started
    failed = [o for o in outcomes if o.kind is not OutcomeKind.SUCCEEDED]
    assert not failed, f"sync lane: {len(failed)} calls failed, first: {failed[0].reason}"
    return elapsed


async def throughput(base_url: str, api_key: str, calls: int, concurrency: int, slice_size: int) -> tuple[float, float]:
    """Both clients make the same ``calls`` calls in interleaved slices; returns (ours, theirs) calls/s.

    Interleaving slices (alternating who goes first) spreads drift in the machine's load and in
    the emulator's state evenly over both clients, instead of favouring whoever runs first. The
    median slice is printed too: it ignores a slice that a burst of other work slowed down.
    """
    bodies = chat_bodies(calls)
    requests = [
        LLMRequest(f"bench-{i}", Endpoint.CHAT, MODEL, {k: v for k, v in body.items() if k != "model"}, lane=Lane.SYNC)
        for i, body in enumerate(bodies)
    ]
    theirs = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=2)
    client = build_client(provider(base_url, api_key, concurrency), retry=RetryPolicy(max_attempts=3))
    warmup = min(2 * concurrency, calls)
    await openai_slice(theirs, bodies[:warmup], concurrency)
    await ours_slice(client.sync, requests[:warmup], concurrency)
    elapsed = {"ours": 0.0, "openai": 0.0}
    slice_rates: dict[str, list[float]] = {"ours": [], "openai": []}
    for number, start in enumerate(range(0, calls, slice_size)):
        stop = min(start + slice_size, calls)
        order = ("openai", "ours") if number % 2 == 0 else ("ours", "openai")
        rates = {}
        for who in order:
            # Both clients share this interpreter: collect one's garbage before the other runs.
            gc.collect()
            if who == "openai":
                seconds = await openai_slice(theirs, bodies[start:stop], concurrency)
            else:
                seconds = await ours_slice(client.sync, requests[start:stop], concurrency)
            elapsed[who] += seconds
            rates[who] = (stop - start) / seconds
            slice_rates[who].append(rates[who])
        label = f"slice {number + 1:>2} ({stop - start} calls)"
        print(f"  {label}: ours {rates['ours']:6.0f} calls/s, AsyncOpenAI {rates['openai']:6.0f} calls/s")
    await theirs.close()
    await client.aclose()
    median_ours, median_theirs = statistics.median(slice_rates["ours"]), statistics.median(slice_rates["openai"])
    print(f"  median slice: ours {median_ours:.0f} calls/s, AsyncOpenAI {median_theirs:.0f} calls/s")
    return calls / elapsed["ours"], calls / elapsed["openai"]


# --- overhead against an instant responder --------------------------------------------------


class InstantTransport(httpx.AsyncBaseTransport):
    """Answers every request at once with a canned chat completion (no socket, no server)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return httpx.Response(200, headers={"content-type": "application/json"}, content=CANNED)


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    p50 = statistics.median(ordered) / 1e6
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] / 1e6
    return p50, p95


async def overhead(samples: int) -> tuple[tuple[float, float], tuple[float, float]]:
    body = chat_bodies(1)[0]
    request = LLMRequest(
        "overhead", Endpoint.CHAT, MODEL, {k: v for k, v in body.items() if k != "model"}, lane=Lane.SYNC
    )
    client = build_client(provider("http://instant.invalid/v1", "k", 64), async_transport=InstantTransport())
    theirs = openai.AsyncOpenAI(
        base_url="http://instant.invalid/v1",
        api_key="k",
        http_client=httpx2.AsyncClient(
            transport=httpx2.MockTransport(
                lambda r: httpx2.Response(200, headers={"content-type": "application/json"}, content=CANNED)
            )
        ),
    )

    async def time_calls(call) -> list[int]:
        for _ in range(min(300, samples)):
            await call()
        out = []
        for _ in range(samples):
            started = time.perf_counter_ns()
            await call()
            out.append(time.perf_counter_ns() - started)
        return out

    async def ours_call() -> None:
        outcome = await client.sync.acall(request)
        assert outcome.kind is OutcomeKind.SUCCEEDED and outcome.usage.input_tokens == 31

    async def openai_call() -> None:
        await theirs.chat.completions.create(**body)

    ours_ns = await time_calls(ours_call)
    theirs_ns = await time_calls(openai_call)
    await client.aclose()
    await theirs.close()
    return percentiles(ours_ns), percentiles(theirs_ns)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--slice", type=int, default=500, help="calls per interleaved slice")
    parser.add_argument("--overhead-samples", type=int, default=3_000)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (1,000 calls)")
    parser.add_argument("--serve-emulator", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_emulator:
        serve_emulator()
        return
    if args.quick:
        args.calls, args.slice, args.overhead_samples = min(args.calls, 1_000), 250, 1_000

    print(f"sync lane: {args.calls} chat calls per client at concurrency {args.concurrency}, emulator in a subprocess")
    with emulator_process() as emu:
        ours, theirs = asyncio.run(
            throughput(emu["openai_base_url"], emu["api_key"], args.calls, args.concurrency, args.slice)
        )
    ratio = ours / theirs
    print(f"  overall (calls / total time): ours {ours:.0f} calls/s, AsyncOpenAI {theirs:.0f} calls/s ({ratio:.2f}x)")

    (o50, o95), (t50, t95) = asyncio.run(overhead(args.overhead_samples))
    print(f"per-call client time against an instant in-memory responder ({args.overhead_samples} sequential calls):")
    print(f"  ours:        p50 {o50:.3f} ms  p95 {o95:.3f} ms")
    print(f"  AsyncOpenAI: p50 {t50:.3f} ms  p95 {t95:.3f} ms")

    lane_verdict = "met" if ours >= theirs else "missed"
    overhead_verdict = "met" if o95 < OVERHEAD_BOUND_MS else "missed"
    print(f"TARGET sync_lane: {ours:.0f} calls/s vs {theirs:.0f} AsyncOpenAI calls/s {lane_verdict}")
    print(f"TARGET sync_overhead_p95: {o95:.3f} ms vs {OVERHEAD_BOUND_MS} {overhead_verdict}")


if __name__ == "__main__":
    main()
