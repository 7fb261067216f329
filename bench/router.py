"""Router benchmark: deferrable enqueue, the HTTP front door, and interactive overhead, each against a baseline.

1. Enqueue from one process on SQLite, durable before the call returns (``Router.call``), against
   a bare ``sqlite3`` INSERT + COMMIT per call into a table of the same shape (the same DDL and
   indexes, the same pragmas, the same row). Slices of the two alternate, so the machine's noise
   falls on both.
2. ``batch-pipelines serve`` (uvicorn, its own process) at concurrency 64, deferrable POSTs,
   against a bare Starlette route on the same server stack that does only that INSERT + COMMIT
   and answers 202.
3. Interactive calls through ``serve`` against the same call made directly to the sync lane (the
   emulator, its own process), alternating one by one: the p95 latency added.

    python -m bench.router [--quick] [--calls N] [--http-calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ENQUEUE_RATIO_TARGET = 0.5
ENQUEUE_P95_MS_TARGET = 5.0
SERVE_RATIO_TARGET = 0.5
INTERACTIVE_ADDED_P95_MS_TARGET = 2.0
CONCURRENCY = 64
MODEL = "gpt-5.4-mini"


def body(i: int) -> dict:
    return {
        "model": MODEL,
        "max_completion_tokens": 8,
        "messages": [{"role": "user", "content": f"Labels: billing, bug, other\nTicket {i}: my invoice is wrong"}],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 20 else max(values)


# -- 1. enqueue -----------------------------------------------------------------------------


def bare_table(path: Path) -> sqlite3.Connection:
    """The buffer's table, created from the same SQLAlchemy DDL, written to by plain sqlite3."""
    from sqlalchemy.dialects import sqlite as sqlite_dialect
    from sqlalchemy.schema import CreateIndex, CreateTable

    from batch_pipelines.ledger.deferred_schema import deferred_calls

    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    dialect = sqlite_dialect.dialect()
    connection.execute(str(CreateTable(deferred_calls).compile(dialect=dialect)))
    for index in deferred_calls.indexes:
        connection.execute(str(CreateIndex(index).compile(dialect=dialect)))
    return connection


BARE_INSERT = (
    "INSERT INTO bp_deferred_calls (call_id, idempotency_key, provider, model, endpoint, body, deadline, state, "
    "flush_id, warning, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def bare_insert(connection: sqlite3.Connection, i: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    row = (f"dfr_{uuid.uuid4().hex}", None, "emulator", MODEL, "/v1/chat/completions", json.dumps(body(i)))
    connection.execute("BEGIN IMMEDIATE")
    connection.execute(BARE_INSERT, (*row, None, "queued", None, None, now, now))
    connection.execute("COMMIT")


def bench_enqueue(calls: int, root: Path) -> dict:
    from batch_pipelines.services.gateway_config import build_gateway
    from batch_pipelines.services.router import Router

    gateway = build_gateway(
        emulator_url="http://127.0.0.1:9", ledger_url=f"sqlite:///{root / 'ledger.sqlite'}", results_dir=root / "r"
    )
    router = Router(gateway)
    bare = bare_table(root / "bare.sqlite")
    ours_s: list[float] = []
    bare_s: list[float] = []
    slices = 10
    per_slice = max(1, calls // slices)
    for i in range(50):  # warm both paths
        router.call(body(i))
        bare_insert(bare, i)
    for s in range(slices):
        for i in range(per_slice):
            started = time.perf_counter()
            bare_insert(bare, s * per_slice + i)
            bare_s.append(time.perf_counter() - started)
        for i in range(per_slice):
            started = time.perf_counter()
            router.call(body(s * per_slice + i))
            ours_s.append(time.perf_counter() - started)
    router.close()
    bare.close()
    return {
        "ours_per_s": len(ours_s) / sum(ours_s),
        "bare_per_s": len(bare_s) / sum(bare_s),
        "ours_p95_ms": p95(ours_s) * 1000,
        "bare_p95_ms": p95(bare_s) * 1000,
    }


# -- 2. and 3. over HTTP --------------------------------------------------------------------


def serve_bare(port: int, database: str) -> None:
    """The baseline server: one Starlette route, the INSERT + COMMIT, 202."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    connection = bare_table(Path(database))

    async def enqueue(request: Request) -> JSONResponse:
        payload = await request.json()
        call_id = f"dfr_{uuid.uuid4().hex}"
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            BARE_INSERT,
            (call_id, None, "emulator", payload["model"], "/v1/chat/completions", json.dumps(payload))
            + (None, "queued", None, None, now, now),
        )
        connection.execute("COMMIT")
        return JSONResponse({"id": call_id, "object": "deferred_call", "status": "queued"}, status_code=202)

    app = Starlette(routes=[Route("/v1/chat/completions", enqueue, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not start")


async def post_many(url: str, calls: int, headers: dict[str, str]) -> float:
    """calls per second at CONCURRENCY in flight; every answer must be a 202."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        queue = iter(range(calls))

        async def worker() -> None:
            for i in queue:
                response = await client.post(url, json=body(i), headers=headers)
                if response.status_code != 202:
                    raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return calls / (time.perf_counter() - started)


def bench_http(calls: int, interactive_calls: int, root: Path) -> dict:
    emulator_port, serve_port, bare_port = free_port(), free_port(), free_port()
    python = sys.executable
    emulator = start([python, "-m", "batch_pipelines.cli", "emulator", "--port", str(emulator_port)])
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    serve = start(
        [python, "-m", "batch_pipelines.cli", "serve", "--port", str(serve_port), "--emulator", emulator_url]
        + ["--ledger", f"sqlite:///{root / 'serve.sqlite'}"],
        env={"BATCH_PIPELINES_SERVE_KEYS": "bench-key"},
    )
    bare = start([python, "-m", "bench.router", "--bare-server", str(bare_port), str(root / "bare-http.sqlite")])
    try:
        for url in (emulator_url, f"http://127.0.0.1:{serve_port}", f"http://127.0.0.1:{bare_port}"):
            wait_ready(url)
        auth = {"Authorization": "Bearer bench-key"}
        ours_url = f"http://127.0.0.1:{serve_port}/v1/chat/completions"
        bare_url = f"http://127.0.0.1:{bare_port}/v1/chat/completions"
        asyncio.run(post_many(ours_url, 200, auth))  # warm both
        asyncio.run(post_many(bare_url, 200, {}))
        ours_rates, bare_rates = [], []
        for _ in range(3):
            bare_rates.append(asyncio.run(post_many(bare_url, calls // 3, {})))
            ours_rates.append(asyncio.run(post_many(ours_url, calls // 3, auth)))

        direct_s: list[float] = []
        through_s: list[float] = []
        interactive = {**auth, "X-Batch-Lane": "interactive"}
        with httpx.Client(timeout=30) as client:
            for i in range(interactive_calls + 20):
                started = time.perf_counter()
                direct = client.post(f"{emulator_url}/v1/chat/completions", json=body(i), headers=auth)
                direct_elapsed = time.perf_counter() - started
                started = time.perf_counter()
                through = client.post(ours_url, json=body(i), headers=interactive)
                through_elapsed = time.perf_counter() - started
                if direct.status_code != 200 or through.status_code != 200:
                    raise RuntimeError(f"interactive call failed: {direct.status_code} / {through.status_code}")
                if i >= 20:  # the first calls warm connections and caches
                    direct_s.append(direct_elapsed)
                    through_s.append(through_elapsed)
    finally:
        for process in (serve, bare, emulator):
            process.terminate()
        for process in (serve, bare, emulator):
            process.wait(timeout=30)
    return {
        "serve_per_s": statistics.median(ours_rates),
        "bare_serve_per_s": statistics.median(bare_rates),
        "direct_p95_ms": p95(direct_s) * 1000,
        "through_p95_ms": p95(through_s) * 1000,
        "direct_p50_ms": statistics.median(direct_s) * 1000,
        "through_p50_ms": statistics.median(through_s) * 1000,
    }


def target(name: str, figure: str, ok: bool) -> str:
    return f"TARGET {name}: {figure} {'met' if ok else 'missed'}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--http-calls", type=int, default=None)
    parser.add_argument("--bare-server", nargs=2, metavar=("PORT", "DB"))
    args = parser.parse_args(argv)
    if args.bare_server:
        serve_bare(int(args.bare_server[0]), args.bare_server[1])
        return 0
    calls = args.calls or (1000 if args.quick else 5000)
    http_calls = args.http_calls or (600 if args.quick else 3000)
    interactive_calls = 100 if args.quick else 400
    with tempfile.TemporaryDirectory(prefix="bp-bench-router-") as tmp:
        root = Path(tmp)
        enqueue = bench_enqueue(calls, root)
        http = bench_http(http_calls, interactive_calls, root)
    ratio = enqueue["ours_per_s"] / enqueue["bare_per_s"]
    serve_ratio = http["serve_per_s"] / http["bare_serve_per_s"]
    added = http["through_p95_ms"] - http["direct_p95_ms"]
    print(f"enqueue, {calls} calls on SQLite, durable before return:")
    print(f"  Router.call (deferrable)   {enqueue['ours_per_s']:>9,.0f} calls/s   p95 {enqueue['ours_p95_ms']:.2f} ms")
    print(f"  bare sqlite3 insert+commit {enqueue['bare_per_s']:>9,.0f} calls/s   p95 {enqueue['bare_p95_ms']:.2f} ms")
    print(f"serve, {http_calls} deferrable POSTs at concurrency {CONCURRENCY}:")
    print(f"  batch-pipelines serve      {http['serve_per_s']:>9,.0f} calls/s")
    print(f"  bare Starlette route       {http['bare_serve_per_s']:>9,.0f} calls/s")
    print(f"interactive, {interactive_calls} calls one at a time:")
    print(f"  direct to the sync lane    p50 {http['direct_p50_ms']:.2f} ms   p95 {http['direct_p95_ms']:.2f} ms")
    print(f"  through serve              p50 {http['through_p50_ms']:.2f} ms   p95 {http['through_p95_ms']:.2f} ms")
    print(target("router_enqueue", f"{ratio:.2f}x bare sqlite3 (>= {ENQUEUE_RATIO_TARGET}x)", ratio >= 0.5))
    print(
        target(
            "router_enqueue_p95",
            f"{enqueue['ours_p95_ms']:.2f} ms (< {ENQUEUE_P95_MS_TARGET} ms)",
            enqueue["ours_p95_ms"] < ENQUEUE_P95_MS_TARGET,
        )
    )
    print(target("router_serve", f"{serve_ratio:.2f}x bare Starlette (>= {SERVE_RATIO_TARGET}x)", serve_ratio >= 0.5))
    print(
        target(
            "router_interactive_added_p95",
            f"{added:+.2f} ms over direct (< {INTERACTIVE_ADDED_P95_MS_TARGET} ms)",
            added < INTERACTIVE_ADDED_P95_MS_TARGET,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
