"""Several workers (threads, each with its own Ledger) on one database produce one set of results."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from batch_pipelines.core.requests import Lane
from batch_pipelines.core.status import BatchStatus
from batch_pipelines.ledger import Ledger

from .helpers import COST, JOB, PARTITION, PROVIDER, costs, ids, requests, succeeded
from .test_batches import info

T = TypeVar("T")
WORKERS = 4


def run_together(url: str, work: Callable[[Ledger], T], workers: int = WORKERS) -> list[T]:
    """Run ``work`` in ``workers`` threads, each on its own Ledger, released at the same instant."""
    ledgers = [Ledger(url, chunk_size=25) for _ in range(workers)]
    start = threading.Barrier(workers)

    def one(ledger: Ledger) -> T:
        start.wait()
        return work(ledger)

    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, ledgers))
    finally:
        for ledger in ledgers:
            ledger.close()


def test_concurrent_replays_of_one_batch_count_each_item_once(ledger, ledger_url):
    """Workers replaying the same outcomes at once leave one closed attempt per item and the cost counted once."""
    n = 200
    ledger.record_items(JOB, PARTITION, requests(n), provider=PROVIDER)
    ledger.assign_items(JOB, PARTITION, ids(n), batch_key="k1", lane=Lane.BATCH)
    outcomes, money = succeeded(ids(n)), costs(ids(n))

    moved = run_together(ledger_url, lambda worker: worker.record_outcomes(JOB, PARTITION, "k1", outcomes, money))

    assert sum(moved) == n
    totals = ledger.partition_totals(JOB, PARTITION)
    assert totals.counts == {"succeeded": n}
    assert (totals.attempts, totals.open_attempts) == (n, 0)
    assert totals.cost_usd == COST[0] * n and totals.sync_equivalent_usd == COST[1] * n
    assert all(row.attempts == 1 and row.cost_usd == COST[0] for row in ledger.iter_items(JOB, PARTITION))


def test_concurrent_assignments_put_each_item_in_one_batch(ledger, ledger_url):
    """Workers assigning the same items under different keys at once each win some; no item is in two batches."""
    n = 150
    ledger.record_items(JOB, PARTITION, requests(n), provider=PROVIDER)
    keys = iter(f"shard-{i}" for i in range(WORKERS))
    lock = threading.Lock()

    def assign(worker: Ledger) -> int:
        with lock:
            key = next(keys)
        return worker.assign_items(JOB, PARTITION, ids(n), batch_key=key, lane=Lane.BATCH)

    assert sum(run_together(ledger_url, assign)) == n
    totals = ledger.partition_totals(JOB, PARTITION)
    assert totals.counts == {"submitted": n}
    assert totals.open_attempts == n  # one attempt per item, under the key that won it
    assert all(row.attempts == 1 for row in ledger.iter_items(JOB, PARTITION))


def test_concurrent_claims_have_one_winner(ledger, ledger_url):
    """Of several workers claiming one finished batch at once, exactly one gets it."""
    ledger.record_batch(info(status=BatchStatus.COMPLETED), intent_key=None, job=JOB, partition=PARTITION)
    names = iter(f"worker-{i}" for i in range(WORKERS))
    lock = threading.Lock()

    def claim(worker: Ledger) -> bool:
        with lock:
            name = next(names)
        return worker.claim_batch_for_reconcile("openai", "batch_abc", worker=name)

    assert sorted(run_together(ledger_url, claim)) == [False] * (WORKERS - 1) + [True]
