"""Drive one partition through the Gateway the way the Dagster layer does, on virtual time.

The submit asset calls ``Gateway.submit``; the completion sensor calls ``Gateway.poll`` every
tick and, once a partition is ready, the results asset calls ``Gateway.reconcile`` (the
deadline sensor calls ``watch_deadlines`` and the promote run ``promote``). ``run_partition``
does the same in a plain loop, moving the emulator's clock instead of waiting, and
``assert_invariants`` checks what the issue asks of every fault scenario.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq

from batch_pipelines.core.errors import ProviderError, QueueFullError
from batch_pipelines.core.lanes import LanePolicy
from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.core.usage import Usage
from batch_pipelines.emulator.testing import RunningEmulator
from batch_pipelines.ledger import Ledger
from batch_pipelines.providers.client import build_client
from batch_pipelines.providers.config import ProviderRegistry
from batch_pipelines.providers.retry import NO_WAIT, RetryPolicy
from batch_pipelines.services.gateway import Gateway, ReconcileReport

OPENAI_MODEL = "gpt-5.4-mini"
ANTHROPIC_MODEL = "claude-sonnet-4.6"
GEMINI_MODEL = "gemini-3-flash"  # Gemini's native protocol; requests stay in the OpenAI chat shape
TERMINAL = frozenset(k.value for k in OutcomeKind)
# A lane policy for tests: the sync lane is quick (the emulator answers at once) and the margins
# are those of production, so deadlines play out on the virtual clock as they would for real.
TEST_POLICY = LanePolicy(max_attempts=3, sync_remainder_threshold=100)
_names = itertools.count()


def fresh_name(stem: str) -> str:
    """A job or partition name no other scenario in this process uses (emulators are shared)."""
    return f"{stem}-{next(_names)}"


class VirtualTime:
    """The emulator's frozen virtual clock, mirrored locally so reading it costs no HTTP call."""

    def __init__(self, emu: RunningEmulator) -> None:
        self.emu = emu
        self._now = emu.now()
        self._lock = threading.Lock()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.emu.advance(seconds)
            self._now = self.emu.now()

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)


class FakeMonotonic:
    """Monotonic clock and sleep for provider clients: a sleep moves this clock, never the wall's."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += max(0.0, seconds)
            self.slept += max(0.0, seconds)


def client_factory(fake: FakeMonotonic, retry: RetryPolicy = NO_WAIT) -> Callable[..., Any]:
    return lambda config: build_client(config, retry=retry, sleep=fake.sleep, clock=fake.clock)


def build_gateway(
    emu: RunningEmulator,
    root: Path,
    vtime: VirtualTime,
    *,
    ledger_url: str | None = None,
    policy: LanePolicy = TEST_POLICY,
    retry: RetryPolicy = NO_WAIT,
) -> Gateway:
    """A Gateway wired like ``BatchGatewayResource.build_gateway``, with injected clocks."""
    root = Path(root)
    fake = FakeMonotonic()
    return Gateway(
        registry=ProviderRegistry.for_emulator(emu.base_url, api_key=emu.api_key),
        ledger=Ledger(ledger_url or f"sqlite:///{root / 'ledger.sqlite'}", clock=vtime.datetime),
        price_book=PriceBook.default(),
        work_dir=root / "work",
        results_dir=root / "results",
        policy=policy,
        clock=vtime.datetime,
        monotonic=fake.clock,
        client_factory=client_factory(fake, retry),
    )


def make_requests(
    n: int, *, model: str = OPENAI_MODEL, deadline: datetime | None = None, prefix: str = "item"
) -> list[LLMRequest]:
    """``n`` small classification requests (Anthropic messages for claude-*, else the OpenAI chat shape)."""
    anthropic = model.startswith("claude")
    requests = []
    for i in range(n):
        body: dict[str, Any] = {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": f"Labels: billing, bug, other\nTicket {i}: the invoice for order {i} is wrong",
                }
            ],
        }
        if anthropic:
            body["max_tokens"] = 32
        endpoint = Endpoint.MESSAGES if anthropic else Endpoint.CHAT
        requests.append(LLMRequest(f"{prefix}-{i:04d}", endpoint, model, body, Lane.BATCH, deadline))
    return requests


def rebuilder(requests: Sequence[LLMRequest]) -> Callable[[Sequence[str]], list[LLMRequest]]:
    by_id = {r.custom_id: r for r in requests}
    return lambda ids: [by_id[i] for i in ids]


@dataclass
class Scenario:
    """One partition's run: what went in, what each reconcile said, and the emulator's books."""

    emu: RunningEmulator
    vtime: VirtualTime
    gateway: Gateway
    job: str
    partition: str
    requests: list[LLMRequest]
    stats_before: dict[str, Any]
    reports: list[ReconcileReport] = field(default_factory=list)
    submit_refusals: int = 0
    failed_ticks: int = 0
    ticks: int = 0

    @property
    def model(self) -> str:
        return self.requests[0].model

    @property
    def rebuild(self) -> Callable[[Sequence[str]], list[LLMRequest]]:
        return rebuilder(self.requests)

    @property
    def last(self) -> ReconcileReport:
        return self.reports[-1]


def start(
    emu: RunningEmulator,
    gateway: Gateway,
    vtime: VirtualTime,
    requests: list[LLMRequest],
    *,
    job: str | None = None,
    partition: str = "p0",
) -> Scenario:
    return Scenario(emu, vtime, gateway, job or fresh_name("job"), partition, list(requests), emu.stats())


def submit(scenario: Scenario, *, max_refusals: int = 20, step_seconds: float = 600) -> None:
    """The submit asset; a full queue (429 on create) fails the run, and a later run tries again."""
    for _ in range(max_refusals):
        try:
            scenario.gateway.submit(scenario.job, scenario.partition, scenario.requests)
            return
        except QueueFullError:
            scenario.submit_refusals += 1
            scenario.vtime.advance(step_seconds)
        except ProviderError as exc:
            # A create that died on a 5xx (Anthropic's create is never retried blindly): the
            # submit run fails and the next run resumes the intent, as Dagster's retry would.
            if exc.status_code is None or exc.status_code < 500:
                raise
            scenario.submit_refusals += 1
    raise AssertionError(f"the submit was refused {max_refusals} times")


def tick(scenario: Scenario, *, parse_response=None, worker: str = "gateway") -> bool:
    """One sensor tick and, when the partition is ready, one results run; True once complete."""
    gw, job, partition = scenario.gateway, scenario.job, scenario.partition
    scenario.ticks += 1
    try:
        gw.poll(job)
        progress = gw.progress(job, partition)
        if not progress.ready_for_results:
            return False
        report = gw.reconcile(
            job, partition, rebuild_requests=scenario.rebuild, parse_response=parse_response, worker=worker
        )
    except ProviderError as exc:
        # The vendor kept failing past the retry policy (injected 5xx): this tick or run fails
        # and the next one starts again from the ledger, as a sensor tick or a run retry would.
        if exc.status_code is not None and exc.status_code < 500:
            raise
        scenario.failed_ticks += 1
        return False
    scenario.reports.append(report)
    return report.complete


def drive(scenario: Scenario, *, step_seconds: float = 3600, max_ticks: int = 80, parse_response=None) -> Scenario:
    """Tick, moving virtual time, until the results run says the partition is complete."""
    if scenario.reports and scenario.last.complete:
        return scenario
    for _ in range(max_ticks):
        if tick(scenario, parse_response=parse_response):
            return scenario
        scenario.vtime.advance(step_seconds)
    raise AssertionError(
        f"{scenario.job}/{scenario.partition} did not complete in {max_ticks} ticks: "
        f"{scenario.gateway.ledger.item_counts(scenario.job, scenario.partition)}"
    )


def run_partition(emu, gateway, vtime, requests, **options) -> Scenario:
    scenario = start(emu, gateway, vtime, requests)
    submit(scenario)
    return drive(scenario, **options)


# -- invariants ---------------------------------------------------------------------------


def _usage(raw: dict[str, int]) -> Usage:
    # The emulator counts in OpenAI's way: input includes cached tokens; it has no cache writes.
    return Usage(raw["input_tokens"], raw["cached_tokens"], 0, raw["output_tokens"], raw.get("reasoning_tokens", 0))


def _minus(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def new_batch_ids(scenario: Scenario, stats_after: dict[str, Any]) -> set[str]:
    return set(stats_after["usage"]) - set(scenario.stats_before["usage"])


def emulator_cost(scenario: Scenario, stats_after: dict[str, Any] | None = None) -> Decimal:
    """The priced sum of the usage the emulator reported for this scenario's batches and sync calls."""
    stats_after = stats_after or scenario.emu.stats()
    book = scenario.gateway.price_book
    total = Decimal(0)
    for batch_id in new_batch_ids(scenario, stats_after):
        total += book.cost(scenario.model, _usage(stats_after["usage"][batch_id]), Lane.BATCH).cost_usd
    sync = _minus(stats_after["sync_usage"], scenario.stats_before["sync_usage"])
    total += book.cost(scenario.model, _usage(sync), Lane.SYNC).cost_usd
    return total


def vendor_batches_by_intent(scenario: Scenario) -> Counter:
    """How many vendor batches carry each of this job's intent keys (from the vendor's list endpoint):
    OpenAI in metadata, Gemini as the display name."""
    if scenario.model.startswith("gemini"):
        return _gemini_batches_by_intent(scenario)
    counts: Counter = Counter()
    with httpx.Client(
        base_url=scenario.emu.openai_base_url, headers={"Authorization": f"Bearer {scenario.emu.api_key}"}
    ) as http:
        after = None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after:
                params["after"] = after
            for _ in range(50):  # the profile may inject 5xx on this route too
                response = http.get("/batches", params=params)
                if response.status_code < 500:
                    break
            page = response.raise_for_status().json()
            for batch in page["data"]:
                meta = batch.get("metadata") or {}
                if meta.get("bp_job") == scenario.job and meta.get("bp_partition") == scenario.partition:
                    counts[meta["bp_intent"]] += 1
            if not page.get("has_more"):
                return counts
            after = page["last_id"]


def _gemini_batches_by_intent(scenario: Scenario) -> Counter:
    intents = {i.intent_key for i in scenario.gateway.ledger.intents(scenario.job, scenario.partition)}
    counts: Counter = Counter()
    with httpx.Client(base_url=scenario.emu.base_url, headers={"x-goog-api-key": scenario.emu.api_key}) as http:
        token = None
        while True:
            params: dict[str, Any] = {"pageSize": 100}
            if token:
                params["pageToken"] = token
            for _ in range(50):  # the profile may inject 5xx on this route too
                response = http.get("/v1beta/batches", params=params)
                if response.status_code < 500:
                    break
            page = response.raise_for_status().json()
            for operation in page.get("operations", []):
                name = operation["metadata"].get("displayName")
                if name in intents:
                    counts[name] += 1
            token = page.get("nextPageToken")
            if not token:
                return counts


def assert_invariants(
    scenario: Scenario, *, check_cost: bool = True, results_path: Path | None = None
) -> dict[str, int]:
    """Every item exactly one terminal outcome, counts add up, one batch per intent, one row per
    item in the table, and the ledger's cost equal to the priced usage the emulator reported."""
    gw, job, partition = scenario.gateway, scenario.job, scenario.partition
    ledger = gw.ledger
    ids = [r.custom_id for r in scenario.requests]
    items = {item.custom_id: item for item in ledger.iter_items(job, partition)}
    assert sorted(items) == sorted(ids), "the ledger holds exactly the input items"
    unfinished = {cid: item.status for cid, item in items.items() if item.status not in TERMINAL}
    assert not unfinished, f"items left unfinished: {dict(itertools.islice(unfinished.items(), 5))}"
    counts = ledger.item_counts(job, partition)
    assert sum(counts.values()) == len(ids), counts
    for item in items.values():
        if item.status == OutcomeKind.FAILED.value:
            assert item.reason, f"{item.custom_id} failed without the vendor's reason"

    stats_after = scenario.emu.stats()
    created = new_batch_ids(scenario, stats_after)
    recorded = {row.vendor_batch_id for row in ledger.batches(job, partition)}
    assert created == recorded, (
        f"vendor batches {sorted(created - recorded)} unknown to the ledger, {sorted(recorded - created)} "
        "unknown to the vendor"
    )
    intents = ledger.intents(job, partition)
    with_batch = [i.vendor_batch_id for i in intents if i.vendor_batch_id]
    assert len(with_batch) == len(set(with_batch)) == len(created), "one vendor batch per intent"
    if not scenario.model.startswith("claude"):
        per_intent = vendor_batches_by_intent(scenario)
        assert all(n == 1 for n in per_intent.values()), f"an intent has several vendor batches: {per_intent}"
        assert set(per_intent) == {i.intent_key for i in intents if i.vendor_batch_id}

    path = results_path or (scenario.last.results_path if scenario.reports else None)
    assert path is not None and Path(path).exists(), "the results table was written"
    table = pq.read_table(path, columns=["custom_id", "status"])
    table_ids = table.column("custom_id").to_pylist()
    assert sorted(table_ids) == sorted(ids), "one row per input item, no duplicate"
    statuses = dict(zip(table_ids, table.column("status").to_pylist()))
    assert statuses == {cid: item.status for cid, item in items.items()}, "the table agrees with the ledger"

    if check_cost:
        recorded_cost = ledger.partition_totals(job, partition).cost_usd
        expected = emulator_cost(scenario, stats_after)
        assert recorded_cost == expected, f"ledger cost {recorded_cost} != priced emulator usage {expected}"
    return counts
